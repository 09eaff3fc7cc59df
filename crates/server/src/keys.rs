//! Server secrets at start-up: the master key (loaded or generated), the JWT signing key ids and
//! the admin token. The master key is the only secret kept outside the database; the database
//! keeps key ids, hashes and a check value, never a secret.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use keygate_core::key::{self, ADMIN_TOKEN_PREFIX};
use keygate_core::token::Keyring;
use keygate_core::{MasterKey, SecretHash};
use keygate_store::{Store, StoreError};
use rand::RngCore;

/// Where the master key comes from.
#[derive(Debug, Clone)]
pub enum MasterKeySource {
    /// Given directly (hex), e.g. from `KEYGATE_MASTER_KEY`.
    Hex(String),
    /// A file holding the hex key; created (mode 0600) when missing and `create` is set.
    File { path: PathBuf, create: bool },
    /// A throw-away key (in-memory databases only).
    Ephemeral,
}

/// Loads the master key, creating its file on first start. Atomic against two processes
/// starting at once: the key is written to a private temporary file and hard-linked into place,
/// so the file appears whole or not at all, and a loser reads the winner's key.
pub fn load_master_key(source: &MasterKeySource) -> anyhow::Result<MasterKey> {
    match source {
        MasterKeySource::Hex(hex) => MasterKey::from_hex(hex).context("KEYGATE_MASTER_KEY is malformed"),
        MasterKeySource::Ephemeral => Ok(MasterKey::generate()),
        MasterKeySource::File { path, create } => {
            if !path.exists() {
                if !create {
                    bail!(
                        "master key file {} does not exist (it is created by the first `keygate serve`)",
                        path.display()
                    );
                }
                create_key_file(path)?;
            }
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading master key file {}", path.display()))?;
            MasterKey::from_hex(&text).with_context(|| format!("master key file {} is malformed", path.display()))
        }
    }
}

fn create_key_file(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut nonce = [0u8; 8];
    rand::rng().fill_bytes(&mut nonce);
    let tmp = dir.join(format!(".keygate-key-{}.tmp", hex::encode(nonce)));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(format!("{}\n", MasterKey::generate().to_hex()).as_bytes())?;
    f.sync_all()?;
    drop(f);
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
            tracing::info!(path = %path.display(), "generated a new master key; back it up with the database");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating master key file {}", path.display())),
    }
}

const MASTER_CHECK: &str = "master_key_check";
const ADMIN_TOKEN_HASH: &str = "admin_token_hash";

/// Refuses a master key other than the one this database was set up with: every stored hash
/// would silently stop matching.
pub async fn check_master_key(store: &dyn Store, master: &MasterKey) -> anyhow::Result<()> {
    let check = master.admin_token_hasher().hash("keygate master key check");
    store.put_setting(MASTER_CHECK, check.as_bytes(), true).await?;
    let stored = store.get_setting(MASTER_CHECK).await?.unwrap_or_default();
    if stored != check.as_bytes() {
        bail!(
            "the master key does not match this database (it was set up with another key); \
             point --master-key-file / KEYGATE_MASTER_KEY at the key created with it"
        );
    }
    Ok(())
}

/// Creates a first signing key id when none is live.
pub async fn ensure_signing_key(store: &dyn Store) -> Result<(), StoreError> {
    if !store.signing_keys().await?.iter().any(|k| k.retired_at.is_none()) {
        store.add_signing_key(&new_kid()).await?;
    }
    Ok(())
}

pub fn new_kid() -> String {
    let mut b = [0u8; 6];
    rand::rng().fill_bytes(&mut b);
    format!("k{}", hex::encode(b))
}

/// The keyring for the store's live key ids; the newest signs.
pub async fn load_keyring(store: &dyn Store, master: &MasterKey) -> Result<Keyring, StoreError> {
    let keys = store.signing_keys().await?;
    let live: Vec<_> = keys.iter().filter(|k| k.retired_at.is_none()).collect();
    let active = live.iter().max_by_key(|k| (k.created_at, k.kid.clone())).map(|k| k.kid.as_str());
    Ok(Keyring::new(master, live.iter().map(|k| k.kid.as_str()), active))
}

/// Makes sure an admin token exists; returns a newly generated one (to print once) if it made one.
pub async fn ensure_admin_token(store: &dyn Store, master: &MasterKey) -> Result<Option<String>, StoreError> {
    if store.get_setting(ADMIN_TOKEN_HASH).await?.is_some() {
        return Ok(None);
    }
    let token = key::generate(ADMIN_TOKEN_PREFIX);
    let hash = master.admin_token_hasher().hash(&token);
    Ok(store.put_setting(ADMIN_TOKEN_HASH, hash.as_bytes(), true).await?.then_some(token))
}

/// Replaces the admin token; returns the new one (to print once).
pub async fn reset_admin_token(store: &dyn Store, master: &MasterKey) -> Result<String, StoreError> {
    let token = key::generate(ADMIN_TOKEN_PREFIX);
    store.put_setting(ADMIN_TOKEN_HASH, master.admin_token_hasher().hash(&token).as_bytes(), false).await?;
    Ok(token)
}

/// The stored admin token hash, if any.
pub async fn admin_token_hash(store: &dyn Store) -> Result<Option<SecretHash>, StoreError> {
    Ok(store.get_setting(ADMIN_TOKEN_HASH).await?.and_then(|v| <[u8; 32]>::try_from(v.as_slice()).ok()).map(SecretHash))
}
