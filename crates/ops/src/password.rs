//! Console passwords: Argon2id (the crate's defaults: 19 MiB, 2 passes, 1 lane, the OWASP
//! minimum) with a pepper derived from the master key, stored as a PHC string.
//!
//! Hashing and verification run on the blocking pool, at most [`MAX_CONCURRENT`] at once so a
//! burst of logins cannot take every core and gigabytes of memory. A login for an unknown email,
//! or for an account without a password, verifies against a dummy hash made with the same
//! parameters: every login attempt costs exactly one Argon2 verification, so the answer's timing
//! does not say whether the email exists. [`Passwords::verifications`] counts them (tests check
//! the path structurally instead of with a stopwatch).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use keygate_core::MasterKey;
use rand::RngCore;
use tokio::sync::{OnceCell, Semaphore};

/// Shortest accepted password, in characters.
pub const MIN_LEN: usize = 10;
/// Longest accepted password, in bytes (Argon2 takes any length; a cap keeps requests small).
pub const MAX_LEN: usize = 1024;
/// Argon2 computations allowed at once.
pub const MAX_CONCURRENT: usize = 4;

/// Why a password is not accepted; the message is safe to show.
pub fn check_policy(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_LEN {
        return Err(format!("the password must have at least {MIN_LEN} characters"));
    }
    if password.len() > MAX_LEN {
        return Err(format!("the password must have at most {MAX_LEN} bytes"));
    }
    Ok(())
}

#[derive(Clone)]
pub struct Passwords {
    inner: Arc<Inner>,
}

struct Inner {
    pepper: [u8; 32],
    permits: Semaphore,
    dummy: OnceCell<String>,
    verifications: AtomicU64,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passwords(***)")
    }
}

fn argon2(pepper: &[u8; 32]) -> Argon2<'_> {
    Argon2::new_with_secret(pepper, Algorithm::Argon2id, Version::V0x13, Params::default())
        .expect("a 32-byte secret is accepted")
}

fn hash_blocking(pepper: &[u8; 32], password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    argon2(pepper).hash_password_with_salt(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

impl Passwords {
    pub fn new(master: &MasterKey) -> Self {
        Self {
            inner: Arc::new(Inner {
                pepper: master.console_password_pepper(),
                permits: Semaphore::new(MAX_CONCURRENT),
                dummy: OnceCell::new(),
                verifications: AtomicU64::new(0),
            }),
        }
    }

    /// How many verifications ran (one per login attempt that was not throttled).
    pub fn verifications(&self) -> u64 {
        self.inner.verifications.load(Ordering::Relaxed)
    }

    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce(&[u8; 32]) -> T + Send + 'static) -> anyhow::Result<T> {
        let _permit = self.inner.permits.acquire().await?;
        let inner = self.inner.clone();
        Ok(tokio::task::spawn_blocking(move || f(&inner.pepper)).await?)
    }

    /// A new PHC string for `password` (the policy is checked by the caller).
    pub async fn hash(&self, password: &str) -> anyhow::Result<String> {
        let password = password.to_owned();
        self.blocking(move |pepper| hash_blocking(pepper, &password)).await?.map_err(anyhow::Error::msg)
    }

    /// Whether `password` matches `stored`. With no stored hash (unknown email, account without
    /// a password) or an unreadable one, the same work is done against a dummy hash and the
    /// answer is false.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> anyhow::Result<bool> {
        let dummy = self
            .inner
            .dummy
            .get_or_try_init(|| async {
                let mut random = [0u8; 24];
                rand::rng().fill_bytes(&mut random);
                self.hash(&hex::encode(random)).await
            })
            .await?
            .clone();
        let readable = stored.filter(|s| argon2::PasswordHash::new(s).is_ok());
        let (target, real) = match readable {
            Some(s) => (s.to_owned(), true),
            None => (dummy, false),
        };
        let password = password.to_owned();
        self.inner.verifications.fetch_add(1, Ordering::Relaxed);
        let ok = self
            .blocking(move |pepper| argon2(pepper).verify_password(password.as_bytes(), target.as_str()).is_ok())
            .await?;
        Ok(ok && real)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_and_verify() {
        let p = Passwords::new(&MasterKey::generate());
        let h = p.hash("correct horse battery").await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(p.verify("correct horse battery", Some(&h)).await.unwrap());
        assert!(!p.verify("wrong horse battery", Some(&h)).await.unwrap());
        assert!(!p.verify("correct horse battery", None).await.unwrap());
        assert!(!p.verify("correct horse battery", Some("not a phc string")).await.unwrap());
        assert_eq!(p.verifications(), 4, "one Argon2 verification per attempt, whatever the outcome");
        // The pepper is part of the hash: another master key cannot verify it.
        let other = Passwords::new(&MasterKey::generate());
        assert!(!other.verify("correct horse battery", Some(&h)).await.unwrap());
    }

    #[test]
    fn policy() {
        assert!(check_policy("short").is_err());
        assert!(check_policy("0123456789").is_ok());
        assert!(check_policy("ééééééééé").is_err(), "counted in characters");
        assert!(check_policy(&"x".repeat(MAX_LEN + 1)).is_err());
    }
}
