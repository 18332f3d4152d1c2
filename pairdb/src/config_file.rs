//! `--config FILE`: TOML values applied as `PAIRDB_*` environment defaults before flags parse.

use std::path::Path;

use anyhow::{Context as _, bail};

/// Finds `--config FILE` / `--config=FILE` in `args` (or `PAIRDB_CONFIG`) and exports each of the
/// file's keys as `PAIRDB_<KEY>` unless that variable is already set, so flags and the
/// environment keep precedence.
pub fn apply(args: &[String]) -> anyhow::Result<()> {
    let mut path = std::env::var("PAIRDB_CONFIG").ok();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--config" {
            path = it.next().cloned();
        } else if let Some(p) = a.strip_prefix("--config=") {
            path = Some(p.to_owned());
        }
    }
    let Some(path) = path else { return Ok(()) };
    load(Path::new(&path))
}

fn load(path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("parsing config file {}", path.display()))?;
    for (key, value) in table {
        let var = format!("PAIRDB_{}", key.replace('-', "_").to_ascii_uppercase());
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| v.to_string())
                })
                .collect::<Vec<_>>()
                .join(","),
            other => bail!("{}: unsupported value for {key}: {other}", path.display()),
        };
        if std::env::var_os(&var).is_none() {
            // SAFETY: called once at start-up, before any thread is spawned.
            unsafe { std::env::set_var(&var, value) };
        }
    }
    Ok(())
}
