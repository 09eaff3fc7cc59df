//! Secrets at start-up: the master key (loaded or generated), its check against the database, and
//! the JWT signing key ids. The master key is the only secret kept outside the database; the
//! database keeps key ids, hashes and a check value, never a secret.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use std::sync::Arc;

use keygate_core::token::Keyring;
use keygate_core::{MasterKey, Secret};
use keygate_store::{Connect, Store, StoreError};
use rand::RngCore;

/// Where the master key comes from.
#[derive(Debug, Clone)]
pub enum MasterKeySource {
    /// Given directly (hex), e.g. from `KEYGATE_MASTER_KEY`.
    Hex(Secret),
    /// A file holding the hex key; created (mode 0600) when missing and `create` is set.
    File { path: PathBuf, create: bool },
    /// A key the caller already holds.
    Key(MasterKey),
    /// A throw-away key (in-memory databases only).
    Ephemeral,
}

impl MasterKeySource {
    /// The master key for `database_url`: the one given (hex, or a file), else a file beside a
    /// SQLite database (`keygate.db` -> `keygate.key`), created at first start. A shared database
    /// (PostgreSQL) needs the key given: every node must use the same one.
    pub fn for_database(database_url: &str, hex: Option<Secret>, file: Option<PathBuf>) -> anyhow::Result<Self> {
        Ok(match (hex, file) {
            (Some(hex), _) => Self::Hex(hex),
            (None, Some(path)) => Self::File { path, create: true },
            (None, None) => match sqlite_path(database_url) {
                Some(db) => Self::File { path: db.with_extension("key"), create: true },
                None if database_url.starts_with("sqlite:") => Self::Ephemeral,
                None => bail!(
                    "a shared master key is needed with {}: set KEYGATE_MASTER_KEY or --master-key-file",
                    redact_url(database_url)
                ),
            },
        })
    }
}

/// The SQLite file a `sqlite:` URL names, if it names one.
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && !path.starts_with(":memory:")).then(|| PathBuf::from(path))
}

/// A database URL with any password replaced, for logs and errors.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// A database URL for messages: the password hidden and, for a SQLite file named by a relative
/// path, the absolute path it resolves to from here (`sqlite://keygate.db (/srv/keygate.db)`).
pub fn describe_url(url: &str) -> String {
    let shown = redact_url(url);
    match sqlite_path(url).filter(|p| p.is_relative()).and_then(|p| std::path::absolute(p).ok()) {
        Some(abs) => format!("{shown} ({})", abs.display()),
        None => shown,
    }
}

/// Opens the store `database_url` names (creating and migrating it when `migrate` is set), loads
/// the master key, checks it against the database and makes sure a signing key exists. What
/// every keygate process does first: the server, the CLI and a service embedding the Layer.
pub async fn open_store(
    database_url: &str,
    master: &MasterKeySource,
    migrate: bool,
) -> anyhow::Result<(Arc<dyn Store>, MasterKey)> {
    let how = if migrate { Connect::migrate() } else { Connect::existing() };
    open_store_with(database_url, master, how).await
}

/// [`open_store`] with the store's [`Connect`] options. An existing database
/// ([`Connect::existing`]) needs its master key: a missing key file is an error, never created;
/// and it already has a signing key (`keygate serve` or `keygate migrate` made it).
pub async fn open_store_with(
    database_url: &str,
    master: &MasterKeySource,
    how: Connect,
) -> anyhow::Result<(Arc<dyn Store>, MasterKey)> {
    let open = async {
        let store = how.open(database_url).await?;
        let master = match master {
            MasterKeySource::File { path, create: true } if !how.migrates() => {
                load_master_key(&MasterKeySource::File { path: path.clone(), create: false })?
            }
            other => load_master_key(other)?,
        };
        check_master_key(store.as_ref(), &master).await?;
        // A database that is set up has its live signing key (the last one cannot be retired),
        // and an existing one is only opened, not changed.
        if how.migrates() {
            ensure_signing_key(store.as_ref()).await?;
        }
        anyhow::Ok((store, master))
    };
    open.await.with_context(|| format!("opening database {}", describe_url(database_url)))
}

/// Loads the master key, creating its file on first start. Atomic against two processes
/// starting at once: the key is written to a private temporary file and hard-linked into place,
/// so the file appears whole or not at all, and a loser reads the winner's key.
pub fn load_master_key(source: &MasterKeySource) -> anyhow::Result<MasterKey> {
    match source {
        MasterKeySource::Hex(hex) => MasterKey::from_hex(hex.expose()).context("KEYGATE_MASTER_KEY is malformed"),
        MasterKeySource::Key(key) => Ok(key.clone()),
        MasterKeySource::Ephemeral => Ok(MasterKey::generate()),
        MasterKeySource::File { path, create } => {
            if !path.exists() {
                if !create {
                    bail!(
                        "master key file {} does not exist (`keygate serve` or `keygate migrate` creates it \
                         beside a new SQLite database; point --master-key-file or KEYGATE_MASTER_KEY_FILE at the \
                         database's key)",
                        std::path::absolute(path).unwrap_or_else(|_| path.clone()).display()
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

/// Refuses a master key other than the one this database was set up with: every stored hash
/// would silently stop matching.
pub async fn check_master_key(store: &dyn Store, master: &MasterKey) -> anyhow::Result<()> {
    let check = master.admin_token_hasher().hash("keygate master key check");
    // Read first: a database in use has its check value, and a write costs a transaction.
    let stored = match store.get_setting(MASTER_CHECK).await? {
        Some(stored) => stored,
        None => {
            store.put_setting(MASTER_CHECK, check.as_bytes(), true).await?;
            store.get_setting(MASTER_CHECK).await?.unwrap_or_default()
        }
    };
    if stored != check.as_bytes() {
        bail!(
            "the master key does not match this database (it was set up with another key); \
             point --master-key-file / KEYGATE_MASTER_KEY at the key created with it"
        );
    }
    Ok(())
}

/// Creates a first signing key id when none is live (recorded as keygate's own change).
pub async fn ensure_signing_key(store: &dyn Store) -> Result<(), StoreError> {
    if !store.signing_keys().await?.iter().any(|k| k.retired_at.is_none()) {
        store.add_signing_key(&keygate_core::audit::Audit::system(), &new_kid()).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(redact_url("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact_url("sqlite://keygate.db"), "sqlite://keygate.db");
        assert_eq!(sqlite_path("sqlite://dir/k.db?mode=rwc"), Some(PathBuf::from("dir/k.db")));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(describe_url("sqlite:///srv/k.db"), "sqlite:///srv/k.db");
        let here = std::env::current_dir().unwrap().join("k.db");
        assert_eq!(describe_url("sqlite://k.db?mode=rwc"), format!("sqlite://k.db?mode=rwc ({})", here.display()));
        assert_eq!(describe_url("postgres://u:pw@h/db"), "postgres://u:***@h/db");
        assert!(matches!(
            MasterKeySource::for_database("sqlite://k.db", None, None).unwrap(),
            MasterKeySource::File { path, .. } if path == Path::new("k.key")
        ));
        assert!(MasterKeySource::for_database("postgres://u:pw@h/db", None, None).is_err());
    }
}
