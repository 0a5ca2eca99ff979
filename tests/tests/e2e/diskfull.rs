//! A full disk: writes are refused with a clear error, the node keeps serving reads,
//! and after space is freed and the node restarted every acknowledged write is there.
//! Mounts a small tmpfs as the node's data directory, so it needs root (as CI has);
//! elsewhere it says so and skips, except under CI=true.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::bail;
use dynakv_client::settings::Settings;
use dynakv_client::{Client, ClientError, ClientOptions, ReadOptions, WriteOptions};

use crate::harness::{eventually, free_port_run, node_binary, terminate};

/// A tmpfs mount, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> anyhow::Result<Tmpfs> {
        std::fs::create_dir_all(dir)?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()?;
        if !out.status.success() {
            bail!("mount failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }

    fn resize(&self, size: &str) -> anyhow::Result<()> {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "remount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
    }
}

struct Dev(Child);

impl Dev {
    fn start(dir: &Path, port: u16) -> anyhow::Result<Dev> {
        let child = Command::new(node_binary())
            .args([
                "dev",
                "--nodes",
                "1",
                "--replicas",
                "1",
                "--base-port",
                &port.to_string(),
            ])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Dev(child))
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        terminate(&mut self.0, "dev cluster").await
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            // SAFETY: SIGTERM to a child we spawned; dev stops its nodes on it.
            unsafe {
                libc::kill(self.0.id() as i32, libc::SIGTERM);
            }
            let _ = self.0.wait();
        }
    }
}

async fn connect(dir: &Path) -> anyhow::Result<std::sync::Arc<Client>> {
    let config = dir.join("dynakv-dev/client.toml");
    eventually(Duration::from_secs(30), "the node serves", || {
        let config = config.clone();
        async move {
            let settings = Settings::from_file(&config).ok()?;
            let client = Client::connect(ClientOptions::new(
                settings.nodes.clone(),
                settings.tls_config().ok()?,
            ))
            .await
            .ok()?;
            client.status().await.ok()?;
            Some(client)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_clearly_and_loses_nothing_acknowledged() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("dynakv-dev");
    let tmpfs = match Tmpfs::mount(&data, "3m") {
        Ok(t) => t,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            bail!("CI must be able to mount a tmpfs: {e}")
        }
        Err(e) => {
            eprintln!("skipped: {e} (needs root)");
            return Ok(());
        }
    };
    let port = free_port_run(1);
    let dev = Dev::start(dir.path(), port)?;
    let client = connect(dir.path()).await?;

    let mut acked = Vec::new();
    let mut refusal = None;
    for i in 0..2000u32 {
        let value: Vec<u8> = (0..20_000u32)
            .map(|j| (j.wrapping_mul(2654435761).wrapping_add(i) >> 13) as u8)
            .collect();
        match client
            .put(
                format!("key{i}").as_bytes(),
                value.clone(),
                WriteOptions::default(),
            )
            .await
        {
            Ok(_) => acked.push((i, value)),
            Err(e) => {
                refusal = Some(e);
                break;
            }
        }
    }
    let refusal = refusal.expect("a 3 MiB disk fills up");
    match &refusal {
        ClientError::Server(e) => assert!(e.message.contains("disk is full"), "{}", e.message),
        other => panic!("expected a disk-full error, got {other:?}"),
    }
    assert!(!acked.is_empty());
    // Reads still work on the full disk.
    let g = client.get(b"key0", ReadOptions::default()).await?;
    assert_eq!(g.values, vec![acked[0].1.clone()]);

    client.close().await;
    dev.stop().await?;
    tmpfs.resize("64m")?;
    let dev = Dev::start(dir.path(), port)?;
    let client = connect(dir.path()).await?;
    for (i, value) in &acked {
        let g = client
            .get(format!("key{i}").as_bytes(), ReadOptions::default())
            .await?;
        assert_eq!(&g.values, &vec![value.clone()], "acknowledged key{i} lost");
    }
    client
        .put(b"after", b"space freed".to_vec(), WriteOptions::default())
        .await?;
    client.close().await;
    dev.stop().await?;
    Ok(())
}
