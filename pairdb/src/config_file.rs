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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_values_become_env_defaults_without_overriding() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pairdb.toml");
        std::fs::write(
            &path,
            "cfg-test-http = \"127.0.0.1:9\"\ncfg-test-nodes = 5\ncfg_test_list = [\"a=1\", \"b=2\"]\ncfg-test-kept = \"file\"\n",
        )
        .expect("write");
        // SAFETY: these variable names are used by this test only.
        unsafe { std::env::set_var("PAIRDB_CFG_TEST_KEPT", "env") };
        let args = vec![
            "pairdb".to_owned(),
            "--config".to_owned(),
            path.display().to_string(),
        ];
        apply(&args).expect("apply");
        assert_eq!(
            std::env::var("PAIRDB_CFG_TEST_HTTP").as_deref(),
            Ok("127.0.0.1:9")
        );
        assert_eq!(std::env::var("PAIRDB_CFG_TEST_NODES").as_deref(), Ok("5"));
        assert_eq!(
            std::env::var("PAIRDB_CFG_TEST_LIST").as_deref(),
            Ok("a=1,b=2")
        );
        assert_eq!(std::env::var("PAIRDB_CFG_TEST_KEPT").as_deref(), Ok("env"));
    }

    #[test]
    fn a_bad_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("broken.toml");
        std::fs::write(&path, "this is = = not toml").expect("write");
        let err = load(&path).expect_err("invalid toml");
        assert!(format!("{err:#}").contains("broken.toml"));
    }
}
