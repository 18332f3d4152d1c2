//! The secrets every role shares: the internal credential, the server key secret, the admin key.

use std::path::Path;

use anyhow::{Context as _, bail};
use rand::RngCore;

use crate::cli::SecretArgs;

/// Resolved secrets. `Debug` redacts them.
#[derive(Clone)]
pub struct Secrets {
    /// Credential of internal calls.
    pub internal_token: String,
    /// Server secret for API-key HMACs and context tokens.
    pub key_secret: Vec<u8>,
    /// The admin API key.
    pub admin_key: String,
    /// True when `pairdb dev` generated the admin key (so it prints it).
    pub admin_key_generated: bool,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(<redacted>)")
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    internal_token: String,
    key_secret: String,
    #[serde(default)]
    admin_key: Option<String>,
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// Secrets of a separately started role: the internal token and key secret are required; the
/// admin key is optional (without it, no admin route is reachable through this process).
pub fn from_args(args: &SecretArgs) -> anyhow::Result<Secrets> {
    let Some(internal_token) = args.internal_token.clone().filter(|s| !s.is_empty()) else {
        bail!("PAIRDB_INTERNAL_TOKEN (or --internal-token) is required: every role must share it");
    };
    let Some(key_secret) = args.key_secret.clone().filter(|s| !s.is_empty()) else {
        bail!("PAIRDB_KEY_SECRET (or --key-secret) is required: every role must share it");
    };
    Ok(Secrets {
        internal_token,
        key_secret: key_secret.into_bytes(),
        admin_key: args.admin_key.clone().unwrap_or_default(),
        admin_key_generated: false,
    })
}

/// Secrets of `pairdb dev`: flags/env win; otherwise the ones generated into
/// `<data_dir>/secrets.json` on the first run are reused, so restarts keep every API key valid.
pub fn load_or_generate(data_dir: &Path, args: &SecretArgs) -> anyhow::Result<Secrets> {
    let path = data_dir.join("secrets.json");
    let stored: Option<Stored> = match std::fs::read_to_string(&path) {
        Ok(text) => Some(
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut stored = stored.unwrap_or_else(|| Stored {
        internal_token: random_hex(24),
        key_secret: random_hex(32),
        admin_key: None,
    });
    let internal_token = args
        .internal_token
        .clone()
        .unwrap_or_else(|| stored.internal_token.clone());
    let key_secret = args
        .key_secret
        .clone()
        .unwrap_or_else(|| stored.key_secret.clone());
    let (admin_key, admin_key_generated) = match &args.admin_key {
        Some(k) if !k.is_empty() => (k.clone(), false),
        _ => {
            let k = stored
                .admin_key
                .get_or_insert_with(|| format!("pdbadmin_{}", random_hex(20)))
                .clone();
            (k, true)
        }
    };
    write_private(&path, &serde_json::to_vec_pretty(&stored)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(Secrets {
        internal_token,
        key_secret: key_secret.into_bytes(),
        admin_key,
        admin_key_generated,
    })
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("json.tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(tmp, path)
}
