//! Who may talk to an actor over TCP: the system's shared secret, which
//! every TCP connection proves before the `Aid` exchange and before
//! anything else is read.
//!
//! The challenge–response itself is furrow-proto's
//! ([`furrow_proto::handshake`], sans-IO, tested in memory); its I/O is
//! `super::handshake`. Its dialogue (each line one frame, all small):
//!
//! ```text
//! acceptor → dialler   Challenge { nonce: Na }
//! dialler  → acceptor  Auth      { nonce: Nd, mac: HMAC(secret, "furrow-auth-v1 dialler"  ‖ Na ‖ Nd) }
//! acceptor → dialler   AuthOk    { mac: HMAC(secret, "furrow-auth-v1 acceptor" ‖ Nd ‖ Na) }
//! ```
//!
//! - Both nonces are 32 fresh random bytes (drawn here: [`nonce`]), so a
//!   recorded exchange cannot be replayed, and both sides prove knowledge
//!   of the secret (a client is never fooled into talking to an impostor
//!   that just accepts anything).
//! - The two proofs use different labels, so an acceptor's proof cannot be
//!   reflected back as a dialler's.
//! - MACs are compared in constant time (`Mac::verify_slice`).
//! - Until the exchange succeeds, the acceptor reads frames of at most
//!   [`PRE_AUTH_MAX_FRAME`] bytes, so an unauthenticated peer cannot make it
//!   allocate more; any other first frame (a well-formed `Start` included)
//!   closes the connection without being acted on.
//!
//! UDS connections skip this: they are reachable only through a 0700
//! per-user directory, and the peer's uid is checked with `SO_PEERCRED`.
//!
//! What lives here is the secret: where it is read from, how the file is
//! checked before it is read, and its creation.

use crate::{Error, Result};
use furrow_proto::Secret;
use furrow_proto::handshake::Nonce;
pub(crate) use furrow_proto::handshake::PRE_AUTH_MAX_FRAME;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Bound on the whole secret exchange.
pub(crate) const AUTH_TIMEOUT: Duration = Duration::from_secs(5);
/// Environment variable naming the secret file (see
/// [`Config::secret_file`](crate::Config::secret_file) for what is done
/// with it).
///
/// ```no_run
/// // Two programs on different hosts, one system: the same secret on both.
/// std::process::Command::new("my-service")
///     .env(furrow::SECRET_FILE_ENV, "/etc/my-system/furrow-secret")
///     .spawn()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub const SECRET_FILE_ENV: &str = "FURROW_SECRET_FILE";

/// A fresh authentication nonce (the handshake machines take their
/// randomness from their driver).
pub(crate) fn nonce() -> Result<Nonce> {
    let mut n = Nonce::default();
    getrandom::fill(&mut n).map_err(|e| Error::usage(format!("no randomness for an authentication nonce: {e}")))?;
    Ok(n)
}

/// Where the secret is read from when the configuration does not give
/// one: `$FURROW_SECRET_FILE`, else `$XDG_CONFIG_HOME/furrow/secret`, else
/// `$HOME/.config/furrow/secret`.
pub(crate) fn default_secret_file() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(SECRET_FILE_ENV) {
        return Some(PathBuf::from(p));
    }
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Some(Path::new(&d).join("furrow").join("secret"));
    }
    std::env::var_os("HOME").filter(|d| !d.is_empty()).map(|h| Path::new(&h).join(".config/furrow/secret"))
}

/// Shortest secret accepted, in bytes: 128 bits, if every byte were random.
pub(crate) const MIN_SECRET_LEN: usize = 16;
/// Longest secret accepted, in bytes. HMAC hashes a longer key first
/// anyway; the bound keeps a mistaken file (a log, an image) from being
/// read whole and sent to every child in its `SpawnSpec`.
pub(crate) const MAX_SECRET_LEN: usize = 4096;
/// Largest secret file read: the secret and some whitespace around it.
const MAX_SECRET_FILE_LEN: u64 = MAX_SECRET_LEN as u64 + 1024;

/// Whether `secret` (from the configuration or a file) has a usable
/// length; the error says what is wrong, for a message naming its source.
pub(crate) fn check_secret_len(secret: &[u8]) -> std::result::Result<(), String> {
    match secret.len() {
        0 => Err("is empty".into()),
        1 => Err(format!("holds a secret of 1 byte; a secret is at least {MIN_SECRET_LEN} bytes")),
        n if n < MIN_SECRET_LEN => {
            Err(format!("holds a secret of {n} bytes; a secret is at least {MIN_SECRET_LEN} bytes"))
        }
        n if n > MAX_SECRET_LEN => {
            Err(format!("holds a secret of {n} bytes; a secret is at most {MAX_SECRET_LEN} bytes"))
        }
        _ => Ok(()),
    }
}

/// What kind of file `t` is, for a message.
fn kind_of(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// `bytes` in lowercase hex: a secret's text, a hash's name.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(2 * bytes.len());
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Read the secret in `path`, creating it (32 random bytes, hex, mode
/// 0600, in a 0700 directory) when it does not exist.
///
/// The file is opened without blocking (`O_NONBLOCK`: a FIFO without a
/// writer would otherwise hang the start for good, deaf to SIGINT and
/// SIGTERM) and checked through that open file (`fstat`, so what is read
/// is what was checked): it must be a regular file (a character device
/// such as `/dev/zero` was read until memory ran out), ours, readable by
/// nobody else, and at most a few KiB. Its bytes are the secret: text
/// (UTF-8) is trimmed of the whitespace around it (an editor's final
/// newline), anything else is taken byte for byte; the result must be
/// [`MIN_SECRET_LEN`] to [`MAX_SECRET_LEN`] bytes. Every refusal names
/// the file and what is wrong with it.
pub(crate) fn load_or_create_secret(path: &Path) -> Result<Secret> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let io = |what: &str, e| Error::io(format!("{what} secret file {}", path.display()), e);
    let refuse = |why: String| Error::usage(format!("secret file {} {why}", path.display()));
    // O_NOCTTY: a terminal device must not become our controlling one.
    let open = || std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path);
    let file = match open() {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            create_secret(path)?;
            open().map_err(|e| io("cannot open", e))?
        }
        Err(e) => return Err(io("cannot open", e)),
    };
    let meta = file.metadata().map_err(|e| io("cannot stat", e))?;
    if !meta.file_type().is_file() {
        return Err(refuse(format!(
            "is {}, not a regular file: point {SECRET_FILE_ENV} (or Config::secret_file) at a file holding the secret",
            kind_of(meta.file_type())
        )));
    }
    let me = rustix::process::getuid().as_raw();
    if meta.uid() != me {
        return Err(refuse(format!("belongs to uid {}, not to us (uid {me})", meta.uid())));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(refuse(format!(
            "is readable by other users (mode {:o}); run `chmod 600` on it",
            meta.mode() & 0o777
        )));
    }
    if meta.len() > MAX_SECRET_FILE_LEN {
        return Err(refuse(format!(
            "is {} bytes; a secret is at most {MAX_SECRET_LEN} bytes (is it the right file?)",
            meta.len()
        )));
    }
    // Bounded even if the file grows meanwhile: one byte more than allowed
    // is enough to refuse it.
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE_LEN + 1).read_to_end(&mut bytes).map_err(|e| io("cannot read", e))?;
    if bytes.len() as u64 > MAX_SECRET_FILE_LEN {
        return Err(refuse(format!("grew past {MAX_SECRET_FILE_LEN} bytes while it was read")));
    }
    let secret = match std::str::from_utf8(&bytes) {
        Ok(text) => text.trim().as_bytes().to_vec(),
        Err(_) => bytes,
    };
    check_secret_len(&secret).map_err(refuse)?;
    Ok(Secret(secret))
}

/// Create the secret file at `path`: 32 random bytes in hex, mode 0600, in
/// a 0700 directory. A file created meanwhile by someone else is kept.
fn create_secret(path: &Path) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let io = |what: &str, e| Error::io(format!("{what} {}", path.display()), e);
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io("cannot create the directory of", e))?;
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| Error::usage(format!("no randomness for a secret: {e}")))?;
    let hex = hex(&bytes);
    // Written whole to a private temporary file, then hard-linked into
    // place: the link fails if the file exists, so of two processes
    // creating it at once exactly one wins, and nobody ever reads a
    // half-written (or empty) secret.
    let tmp = path.with_extension(format!("tmp-{}-{}", std::process::id(), &hex[..8]));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(format!("{hex}\n").as_bytes())?;
        f.sync_all()
    })();
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            tracing::info!("created a new furrow secret in {}", path.display());
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io("cannot create", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("furrow-auth-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_missing_secret_is_created_private_and_stable() {
        let dir = tmp("create");
        let f = dir.join("sub").join("secret");
        let a = load_or_create_secret(&f).unwrap();
        let b = load_or_create_secret(&f).unwrap();
        assert_eq!(a, b, "the second load reads the same secret");
        assert_eq!(a.0.len(), 64, "32 random bytes in hex");
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(f.parent().unwrap()).unwrap().permissions().mode() & 0o777;
        assert_eq!(dmode, 0o700);
        assert!(!format!("{a:?}").contains(std::str::from_utf8(&a.0).unwrap()), "Debug must not show the secret");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn concurrent_creators_agree_on_one_secret() {
        let dir = tmp("race");
        let f = dir.join("secret");
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let f = f.clone();
                std::thread::spawn(move || load_or_create_secret(&f))
            })
            .collect();
        let got: Vec<Secret> = threads.into_iter().map(|t| t.join().unwrap().unwrap()).collect();
        assert!(got.iter().all(|s| *s == got[0] && s.0.len() == 64), "every creator reads the one secret");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("secret")], "no temporary file left");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_secret_others_can_read_is_refused() {
        let dir = tmp("perm");
        let f = dir.join("secret");
        load_or_create_secret(&f).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_create_secret(&f).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `bytes` written to a fresh private file; its path.
    fn secret_file(name: &str, bytes: &[u8]) -> (PathBuf, PathBuf) {
        let dir = tmp(name);
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("secret");
        std::fs::write(&f, bytes).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        (dir, f)
    }

    fn refusal(path: &Path) -> String {
        match load_or_create_secret(path) {
            Err(Error::Usage(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_fifo_is_refused_at_once_instead_of_hanging() {
        let dir = tmp("fifo");
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("secret");
        let c = std::ffi::CString::new(f.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo on a path we own.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Without a writer, a blocking open never returned.
        let (tx, rx) = std::sync::mpsc::channel();
        let g = f.clone();
        std::thread::spawn(move || tx.send(refusal(&g)));
        let m = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("loading a FIFO secret hung");
        assert_eq!(
            m,
            format!(
                "secret file {} is a FIFO (named pipe), not a regular file: point FURROW_SECRET_FILE \
                 (or Config::secret_file) at a file holding the secret",
                f.display()
            )
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_device_or_a_directory_is_refused_without_reading_it() {
        // `/dev/zero` was read until memory ran out.
        let m = refusal(Path::new("/dev/zero"));
        assert!(m.starts_with("secret file /dev/zero is a character device, not a regular file"), "{m}");
        let dir = tmp("dir");
        std::fs::create_dir_all(dir.join("secret")).unwrap();
        let m = refusal(&dir.join("secret"));
        assert!(m.contains("/secret is a directory, not a regular file"), "{m}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn secrets_too_short_too_long_or_empty_are_refused_naming_the_file() {
        for (name, bytes, why) in [
            ("short", b"x\n".to_vec(), "holds a secret of 1 byte; a secret is at least 16 bytes".to_owned()),
            ("empty", b" \n\t\n".to_vec(), "is empty".to_owned()),
            (
                "long",
                vec![b'k'; MAX_SECRET_LEN + 1],
                "holds a secret of 4097 bytes; a secret is at most 4096 bytes".into(),
            ),
            (
                "huge",
                vec![b'k'; 40 << 20],
                format!("is {} bytes; a secret is at most 4096 bytes (is it the right file?)", 40 << 20),
            ),
        ] {
            let (dir, f) = secret_file(name, &bytes);
            assert_eq!(refusal(&f), format!("secret file {} {why}", f.display()), "{name}");
            std::fs::remove_dir_all(&dir).unwrap();
        }
        // The bounds themselves are fine; whitespace around text does not count.
        for (name, bytes) in [("min", vec![b'a'; MIN_SECRET_LEN]), ("max", vec![b'b'; MAX_SECRET_LEN])] {
            let (dir, f) = secret_file(name, &[b"  ".as_slice(), &bytes, b"\n"].concat());
            assert_eq!(load_or_create_secret(&f).unwrap().0, bytes, "{name}");
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn a_binary_secret_is_taken_byte_for_byte() {
        // Not UTF-8 (`head -c 32 /dev/urandom`): used as is, a trailing
        // newline-like byte included, instead of "stream did not contain
        // valid UTF-8".
        let bytes: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(37) ^ 0xf0).chain([b'\n']).collect();
        assert!(std::str::from_utf8(&bytes).is_err());
        let (dir, f) = secret_file("binary", &bytes);
        assert_eq!(load_or_create_secret(&f).unwrap().0, bytes);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
