//! Shipping the executable to a far host (`Launcher::ship`): copied once
//! over the same ssh destination into a per-user cache, keyed by its hash,
//! checked for the right architecture first, and reused by later spawns
//! (docs/design.md, "Remote hosts", rule 11).
//!
//! ```text
//! ssh dest 'uname -m; echo "$CACHE"; test -x $CACHE/furrow/bin/H/NAME && echo present || echo absent'
//!   absent, same machine type:
//! ssh dest 'mkdir -p …/H && cat > …/H/.NAME.PID && chmod 700 … && sha256sum -c && mv -f … …/H/NAME' < exe
//! ```
//!
//! `$CACHE` is the far user's `$XDG_CACHE_HOME`, else `~/.cache`. `H` is
//! the first 16 bytes of the executable's SHA-256, in hex: a
//! rebuilt binary gets a directory of its own, so a running far child's
//! file is never replaced under it. The copy is written under a temporary
//! name and renamed, so a far child never starts from a half-written
//! file, and two spawns that ship at once each rename a whole copy.

use super::launcher::Launcher;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};
use tokio::io::AsyncReadExt;

/// The executable's hash, by path, size and modification time: hashing a
/// large binary takes a while, and every spawn that ships asks for it.
type HashCache = Mutex<HashMap<(PathBuf, u64, Option<SystemTime>), String>>;

fn hashes() -> &'static HashCache {
    static CACHE: OnceLock<HashCache> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// One shipping at a time in this process: two spawns to the same host
/// would otherwise both see the file absent and both copy it (harmless,
/// each renames a whole copy, but twice the transfer).
fn one_at_a_time() -> &'static tokio::sync::Mutex<()> {
    static LOCK: OnceLock<tokio::sync::Mutex<()>> = OnceLock::new();
    LOCK.get_or_init(|| tokio::sync::Mutex::new(()))
}

/// Make sure `exe` is in the cache of the host `launcher` reaches, and
/// return its path there. Everything within `within`. `Err` is the reason,
/// quoting ssh or the far shell.
///
/// # Cancel safety
/// Dropping the future kills the ssh process in flight (`kill_on_drop`);
/// a copy cut short leaves only its temporary file in the cache
/// directory, never a partial file under the final name.
pub(crate) async fn ensure(launcher: &Launcher, exe: &Path, within: Duration) -> Result<PathBuf, String> {
    match tokio::time::timeout(within, ensure_unbounded(launcher, exe)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "shipping {} took longer than the spawn timeout ({within:?}): raise Config::spawn_timeout for a large \
             binary on a slow link",
            exe.display()
        )),
    }
}

async fn ensure_unbounded(launcher: &Launcher, exe: &Path) -> Result<PathBuf, String> {
    let exe = if exe.is_absolute() { exe.to_owned() } else { which(exe)? };
    let name = exe
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty() && !n.contains(['\'', '\n']))
        .ok_or_else(|| format!("cannot ship {}: its file name is not one to put in a shell command", exe.display()))?
        .to_owned();
    let exe_for_hash = exe.clone();
    let hash = tokio::task::spawn_blocking(move || hash_of(&exe_for_hash))
        .await
        .map_err(|e| format!("hashing {}: {e}", exe.display()))??;
    let key = &hash[..32];
    let _one = one_at_a_time().lock().await;
    // One round trip: the far machine type, where its cache is, and
    // whether the file is there already.
    let probe = format!(
        "uname -m && printf '%s\\n' \"${{XDG_CACHE_HOME:-$HOME/.cache}}\" && if test -x \
         \"${{XDG_CACHE_HOME:-$HOME/.cache}}/furrow/bin/{key}/{name}\"; then echo present; else echo absent; fi"
    );
    let out = run(launcher, &probe, None).await?;
    let mut lines = out.lines();
    let (far_arch, cache, state) = match (lines.next(), lines.next(), lines.next()) {
        (Some(a), Some(h), Some(s)) if !h.is_empty() => (a.trim().to_owned(), h.to_owned(), s.trim().to_owned()),
        _ => return Err(format!("the far shell's answer to a probe was not understood: {out:?}")),
    };
    check_arch(&local_arch(), &far_arch, &exe)?;
    let path = PathBuf::from(format!("{cache}/furrow/bin/{key}/{name}"));
    if state == "present" {
        return Ok(path);
    }
    // Not there: copy it. The directories are the user's alone (0700);
    // the checksum is checked on the far side when it can be (sha256sum),
    // before the rename makes the file visible.
    let copy = format!(
        "set -e; umask 077; c=\"${{XDG_CACHE_HOME:-$HOME/.cache}}/furrow\"; d=\"$c/bin/{key}\"; mkdir -p \"$d\"; \
         chmod 700 \"$c\" \"$c/bin\" \"$d\"; t=\"$d/.{name}.$$\"; trap 'rm -f \"$t\"' EXIT; cat > \"$t\"; chmod 700 \
         \"$t\"; if command -v sha256sum >/dev/null 2>&1; then echo '{hash}  '\"$t\" | sha256sum -c --quiet -; fi; \
         mv -f \"$t\" \"$d/{name}\"; trap - EXIT"
    );
    let file = std::fs::File::open(&exe).map_err(|e| format!("cannot read {} to ship it: {e}", exe.display()))?;
    run(launcher, &copy, Some(file)).await?;
    tracing::info!(exe = %exe.display(), to = %path.display(), "shipped over {}", launcher.describe());
    Ok(path)
}

/// A bare program name, as `exec` would find it on our PATH.
fn which(exe: &Path) -> Result<PathBuf, String> {
    if exe.components().count() > 1 {
        return std::path::absolute(exe).map_err(|e| format!("{}: {e}", exe.display()));
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(exe))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("cannot ship {}: not found on PATH", exe.display()))
}

/// The SHA-256 of `exe`, in hex (cached by path, size and mtime).
fn hash_of(exe: &Path) -> Result<String, String> {
    use std::io::Read as _;
    let meta = std::fs::metadata(exe).map_err(|e| format!("cannot ship {}: {e}", exe.display()))?;
    let key = (exe.to_owned(), meta.len(), meta.modified().ok());
    if let Some(h) = crate::sync::lock(hashes()).get(&key) {
        return Ok(h.clone());
    }
    let mut f = std::fs::File::open(exe).map_err(|e| format!("cannot ship {}: {e}", exe.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| format!("reading {}: {e}", exe.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let hex = crate::ipc::auth::hex(&hasher.finalize());
    crate::sync::lock(hashes()).insert(key, hex.clone());
    Ok(hex)
}

/// This machine's type, as `uname -m` says it.
fn local_arch() -> String {
    rustix::system::uname().machine().to_string_lossy().into_owned()
}

/// A binary for `ours` runs on `theirs` only if they are the same machine
/// type (`uname -m`). No aliases: `x86_64` does not run an `aarch64`
/// binary, and `i686` a 64-bit one even less.
pub(crate) fn check_arch(ours: &str, theirs: &str, exe: &Path) -> Result<(), String> {
    if ours == theirs {
        Ok(())
    } else {
        Err(format!(
            "cannot ship {} there: it is built for this host's machine type {ours}, and the far host is {theirs} \
             (uname -m): build it for {theirs} and name it with SpawnOptions::exe",
            exe.display()
        ))
    }
}

/// Run `line` on the far host through `launcher`'s ssh, `input` as its
/// stdin; its stdout, or `Err` quoting its stderr and status.
async fn run(launcher: &Launcher, line: &str, input: Option<std::fs::File>) -> Result<String, String> {
    let cmd = launcher.remote_shell(line.as_bytes())?;
    let mut c = tokio::process::Command::new(&cmd.program);
    c.args(&cmd.args)
        .stdin(input.map_or_else(Stdio::null, Stdio::from))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = c.spawn().map_err(|e| format!("cannot run ssh: {e}"))?;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let (so, se) = (child.stdout.take(), child.stderr.take());
    // Both pipes read together, so neither fills while the other is
    // waited on.
    let read_out = async {
        if let Some(mut s) = so {
            let _ = s.read_to_end(&mut out).await;
        }
    };
    let read_err = async {
        if let Some(s) = se {
            // At most what a message needs.
            let _ = s.take(4096).read_to_end(&mut err).await;
        }
    };
    tokio::join!(read_out, read_err);
    let status = child.wait().await.map_err(|e| format!("waiting for ssh: {e}"))?;
    if status.success() {
        return Ok(String::from_utf8_lossy(&out).into_owned());
    }
    let said = String::from_utf8_lossy(&err);
    let said = said.trim();
    Err(format!(
        "shipping the executable: ssh exited with {}{}",
        super::describe(&status),
        if said.is_empty() { String::new() } else { format!("; ssh said: {}", said.replace('\n', " / ")) }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_machine_type_is_shipped_to() {
        let exe = Path::new("/opt/app/worker");
        assert!(check_arch("x86_64", "x86_64", exe).is_ok());
        let e = check_arch("x86_64", "aarch64", exe).unwrap_err();
        assert!(e.contains("x86_64") && e.contains("aarch64") && e.contains("/opt/app/worker"), "{e}");
        assert!(check_arch("x86_64", "i686", exe).is_err());
        assert!(!local_arch().is_empty());
    }

    #[test]
    fn a_hash_is_the_files_sha256_and_is_cached() {
        let dir = std::env::temp_dir().join(format!("furrow-ship-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let f = dir.join("bin");
        std::fs::write(&f, b"abc").expect("write");
        let h = hash_of(&f).expect("hash");
        assert_eq!(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(hash_of(&f).expect("again"), h);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
