//! Where the CLI (and other tools) find the cluster: node addresses and TLS files.
//!
//! Sources, strongest first: command-line flags, environment variables
//! (`DYNAKV_NODES`, `DYNAKV_CA`, `DYNAKV_CERT`, `DYNAKV_KEY`), then a `client.toml`
//! (`--config`, `DYNAKV_CONFIG`, or `./dynakv-dev/client.toml` as written by
//! `dynakv-node dev`). Paths inside a `client.toml` are relative to its directory.

use std::path::{Path, PathBuf};

use dynakv_common::wire::ALPN;
use serde::Deserialize;

/// The client file `dynakv-node dev` writes, looked for when nothing else is given.
pub const DEFAULT_CONFIG_PATH: &str = "dynakv-dev/client.toml";

/// What was wrong with the client settings.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(pub String);

/// Resolved settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Node addresses, `host:port`.
    pub nodes: Vec<String>,
    /// Cluster CA certificate.
    pub ca: PathBuf,
    /// This client's certificate.
    pub cert: PathBuf,
    /// This client's private key.
    pub key: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    #[serde(default)]
    nodes: Vec<String>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

/// Explicit values from flags or the environment; `None` falls through to the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub nodes: Vec<String>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

fn read_file(path: &Path) -> Result<FileSettings, SettingsError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| SettingsError(format!("cannot read {}: {e}", path.display())))?;
    let mut s: FileSettings =
        toml::from_str(&text).map_err(|e| SettingsError(format!("{}: {e}", path.display())))?;
    let base = path.parent().unwrap_or(Path::new("."));
    for p in [&mut s.ca, &mut s.cert, &mut s.key].into_iter().flatten() {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    }
    Ok(s)
}

/// Splits comma-separated node lists and drops blanks.
pub fn split_nodes<S: AsRef<str>>(items: &[S]) -> Vec<String> {
    items
        .iter()
        .flat_map(|s| s.as_ref().split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

impl Settings {
    /// Reads a `client.toml` on its own.
    pub fn from_file(path: &Path) -> Result<Settings, SettingsError> {
        Settings::resolve(Overrides {
            config: Some(path.to_path_buf()),
            ..Overrides::default()
        })
    }

    /// Combines overrides with the config file (explicit, or the dev cluster's if present).
    pub fn resolve(o: Overrides) -> Result<Settings, SettingsError> {
        let file = match &o.config {
            Some(path) => read_file(path)?,
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
                read_file(Path::new(DEFAULT_CONFIG_PATH))?
            }
            None => FileSettings::default(),
        };
        let nodes = if o.nodes.is_empty() {
            split_nodes(&file.nodes)
        } else {
            split_nodes(&o.nodes)
        };
        if nodes.is_empty() {
            return Err(SettingsError(format!(
                "no nodes to talk to: pass --node HOST:PORT, set DYNAKV_NODES, or run from the directory where `dynakv-node dev` wrote {DEFAULT_CONFIG_PATH}"
            )));
        }
        let need = |v: Option<PathBuf>, what: &str, flag: &str| {
            v.ok_or_else(|| {
                SettingsError(format!("no {what}: pass {flag} or set it in client.toml"))
            })
        };
        Ok(Settings {
            nodes,
            ca: need(o.ca.or(file.ca), "cluster CA certificate", "--ca")?,
            cert: need(o.cert.or(file.cert), "client certificate", "--cert")?,
            key: need(o.key.or(file.key), "client key", "--key")?,
        })
    }

    /// The QUIC client configuration for these TLS files.
    pub fn tls_config(&self) -> Result<quinn::ClientConfig, SettingsError> {
        crate::tls::client_config(&self.ca, &self.cert, &self.key, ALPN)
            .map_err(|e| SettingsError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_lists_split_on_commas() {
        assert_eq!(
            split_nodes(&["a:1,b:2", " c:3 ", ""]),
            vec!["a:1".to_string(), "b:2".into(), "c:3".into()]
        );
    }

    #[test]
    fn flags_override_the_file_and_paths_are_relative_to_it() {
        let dir = std::env::temp_dir().join(format!("dynakv-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("client.toml");
        std::fs::write(
            &path,
            "nodes = [\"127.0.0.1:1\"]\nca = \"ca.pem\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n",
        )
        .unwrap();
        let s = Settings::from_file(&path).unwrap();
        assert_eq!(s.nodes, vec!["127.0.0.1:1".to_string()]);
        assert_eq!(s.ca, dir.join("ca.pem"));
        let s = Settings::resolve(Overrides {
            config: Some(path.clone()),
            nodes: vec!["127.0.0.2:2".into()],
            ..Overrides::default()
        })
        .unwrap();
        assert_eq!(s.nodes, vec!["127.0.0.2:2".to_string()]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
