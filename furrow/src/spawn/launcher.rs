//! How a child's process is started: on this host (the default), through a
//! command prefix, or on another host over ssh (docs/design.md, "Remote
//! hosts").

use furrow_proto::Addr;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

/// How a child actor's process is started.
///
/// - [`Launcher::local`] (the default): the executable is started here,
///   and connects back over the parent's UDS socket.
/// - [`Launcher::prefix`]: the executable is run by a command (`srun -N1
///   -n1 --`, `kubectl exec -i pod --`, `ip netns exec far`), which must
///   run it with its stdin, stdout and stderr connected to the
///   command's own (as all of those do).
/// - [`Launcher::ssh`]: the executable is run on another host by the
///   system's `ssh` client, so the user's ssh configuration, keys, agent,
///   jump hosts and `ControlMaster` apply as they do for them. By default
///   the remote executable is the same path as the local one.
///
/// A child started by a prefix or over ssh gets its bootstrap (spawn
/// token, the system's secret, where to connect back) on its **stdin**,
/// never in argv or its environment; it connects back over **TCP**, to
/// an address the parent names ([`SpawnOptions::connect_back`], else a
/// TCP address the parent listens on that is not `0.0.0.0`/`::`); and it
/// ends itself when its stdin closes (the parent, or the link, is gone).
/// The teardown ladder's signals reach it over the same stdin.
///
/// [`SpawnOptions::connect_back`]: crate::SpawnOptions::connect_back
///
/// ```no_run
/// use furrow::{Config, Launcher, SpawnOptions};
///
/// let cfg = Config::new("root").bind(["tcp://10.0.0.1:0".parse().expect("address")]);
/// # let _ = cfg;
/// // In the network namespace `far` of this host.
/// let netns = SpawnOptions::new().launcher(Launcher::prefix(["ip", "netns", "exec", "far"]));
/// // On gpu3, port 2222, as user `me`, with an ssh configuration of our own.
/// let gpu = SpawnOptions::new().launcher(Launcher::ssh("me@gpu3:2222").args(["-F", "/etc/furrow/ssh_config"]));
/// # let _ = (netns, gpu);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Launcher {
    kind: Kind,
    args: Vec<OsString>,
    ship: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum Kind {
    #[default]
    Local,
    Prefix(Vec<OsString>),
    Ssh(String),
}

impl Launcher {
    /// Start the child on this host, directly (the default).
    ///
    /// ```
    /// assert_eq!(furrow::Launcher::local(), furrow::Launcher::default());
    /// ```
    pub fn local() -> Launcher {
        Launcher::default()
    }

    /// Run the child's executable through `argv`: the program and its
    /// arguments, the executable and its own arguments appended. The
    /// command must pass its stdin, stdout and stderr through to the
    /// executable. The environment set with
    /// [`SpawnOptions::env`](crate::SpawnOptions::env) is the command's;
    /// whether it reaches the executable is up to the command (`ip netns
    /// exec` and `srun` pass it on, `kubectl exec` does not).
    ///
    /// An empty `argv` fails the spawn with [`Error::Spawn`](crate::Error::Spawn).
    ///
    /// ```no_run
    /// use furrow::{Launcher, SpawnOptions};
    /// // One task of a Slurm allocation.
    /// let opts = SpawnOptions::new().launcher(Launcher::prefix(["srun", "-N1", "-n1", "--"]));
    /// # let _ = opts;
    /// ```
    pub fn prefix<S: Into<OsString>>(argv: impl IntoIterator<Item = S>) -> Launcher {
        Launcher { kind: Kind::Prefix(argv.into_iter().map(Into::into).collect()), args: Vec::new(), ship: false }
    }

    /// Run the child on `host` with the system's `ssh` client: `host` is
    /// an ssh destination, `[user@]host[:port]` (an IPv6 address in
    /// brackets, `[fe80::1]:22`), or a `Host` of the user's ssh
    /// configuration. ssh runs with `-T` (no terminal); add options with
    /// [`args`](Self::args).
    ///
    /// ```no_run
    /// let l = furrow::Launcher::ssh("me@gpu3:2222");
    /// assert_eq!(l.host(), Some("me@gpu3:2222"));
    /// ```
    pub fn ssh(host: impl Into<String>) -> Launcher {
        Launcher { kind: Kind::Ssh(host.into()), args: Vec::new(), ship: false }
    }

    /// Ship the executable to the far host (ssh only): before each spawn,
    /// one ssh round trip checks that the far host is the same machine
    /// type as this one (`uname -m`; a mismatch fails the spawn with
    /// [`Error::Spawn`](crate::Error::Spawn) naming both) and whether
    /// `~/.cache/furrow/bin/<sha256 prefix>/<name>` (`$XDG_CACHE_HOME`
    /// instead of `~/.cache` when the far shell has it set) is there; if
    /// not, the executable is copied there over the same destination
    /// (written under a temporary name, checked against its hash when the
    /// far host has `sha256sum`, then renamed; directories and file 0700),
    /// and the child runs from there. Later spawns, from any process, find
    /// it and copy nothing. The first copy counts against
    /// [`Config::spawn_timeout`](crate::Config::spawn_timeout). Without
    /// it (the default), the far host runs the same path as this one's.
    ///
    /// ```no_run
    /// let l = furrow::Launcher::ssh("gpu3").ship(true);
    /// assert!(l.ships());
    /// ```
    pub fn ship(mut self, yes: bool) -> Launcher {
        self.ship = yes;
        self
    }

    /// Whether the executable is shipped ([`ship`](Self::ship)): only an
    /// ssh launcher ships.
    ///
    /// ```
    /// assert!(!furrow::Launcher::prefix(["srun", "--"]).ship(true).ships());
    /// ```
    pub fn ships(&self) -> bool {
        self.ship && matches!(self.kind, Kind::Ssh(_))
    }

    /// Arguments of the launcher itself: options given to `ssh` before the
    /// destination (`-F <config>`, `-o ConnectTimeout=5`, `-J jump`), or
    /// arguments appended to a prefix. A local launcher given arguments
    /// becomes a prefix of them.
    ///
    /// ```no_run
    /// let l = furrow::Launcher::ssh("gpu3").args(["-o", "ConnectTimeout=5"]);
    /// # let _ = l;
    /// ```
    pub fn args<S: Into<OsString>>(mut self, args: impl IntoIterator<Item = S>) -> Launcher {
        let args = args.into_iter().map(Into::into);
        match &mut self.kind {
            Kind::Local => self.kind = Kind::Prefix(args.collect()),
            Kind::Prefix(argv) => argv.extend(args),
            Kind::Ssh(_) => self.args.extend(args),
        }
        self
    }

    /// The ssh destination, for an ssh launcher.
    ///
    /// ```
    /// assert_eq!(furrow::Launcher::local().host(), None);
    /// ```
    pub fn host(&self) -> Option<&str> {
        match &self.kind {
            Kind::Ssh(h) => Some(h),
            _ => None,
        }
    }

    /// Whether the child is started here, directly.
    pub(crate) fn is_local(&self) -> bool {
        self.kind == Kind::Local
    }

    /// How error messages name it: `ssh to me@gpu3:2222`, `ip netns exec
    /// far`.
    pub(crate) fn describe(&self) -> String {
        match &self.kind {
            Kind::Local => "this host".into(),
            Kind::Prefix(argv) => argv.iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" "),
            Kind::Ssh(h) => format!("ssh to {h}"),
        }
    }

    /// The program that stands for the child locally (its name in
    /// messages).
    pub(crate) fn program(&self) -> String {
        match &self.kind {
            Kind::Local => String::new(),
            Kind::Prefix(argv) => argv.first().map(|a| a.to_string_lossy().into_owned()).unwrap_or_default(),
            Kind::Ssh(_) => "ssh".into(),
        }
    }

    /// The local command that starts `exe args` through this launcher, with
    /// `FURROW_SPAWN=stdin` in the executable's environment. For ssh, the
    /// remote command line carries `env` (the variables the child needs
    /// from `remote_env`, settings removed with `remove`, `clear` for an
    /// empty start) and `cd` to `dir`, quoted for the remote shell.
    pub(crate) fn command(&self, exe: &Path, args: &[OsString], remote: &RemoteEnv<'_>) -> Result<Command, String> {
        let spawn_var = format!("{}={}", crate::runtime::entry::SPAWN_ENV, super::link::ON_STDIN);
        match &self.kind {
            Kind::Local => Err("the local launcher runs no command".into()),
            Kind::Prefix(argv) => {
                let (program, lead) = argv.split_first().ok_or("Launcher::prefix was given an empty command")?;
                // `env` in between: the executable is in child mode even
                // through a command that does not pass the environment on
                // (`kubectl exec`).
                let mut rest: Vec<OsString> = lead.to_vec();
                rest.extend([OsString::from("env"), OsString::from(spawn_var), exe.as_os_str().to_owned()]);
                rest.extend(args.iter().cloned());
                Ok(Command { program: program.clone(), args: rest })
            }
            Kind::Ssh(host) => {
                if host.is_empty() || host.starts_with('-') {
                    return Err(format!("{host:?} is not an ssh destination"));
                }
                let mut line: Vec<u8> = Vec::new();
                if let Some(dir) = remote.dir {
                    line.extend_from_slice(b"cd ");
                    quote_into(&mut line, dir.as_os_str());
                    line.extend_from_slice(b" && ");
                }
                line.extend_from_slice(b"exec env");
                if remote.clear {
                    line.extend_from_slice(b" -i");
                }
                for k in &remote.remove {
                    line.extend_from_slice(b" -u ");
                    quote_into(&mut line, k);
                }
                for (k, v) in &remote.set {
                    if k.as_bytes().contains(&b'=') || k.is_empty() {
                        return Err(format!("{} is not an environment variable name", k.to_string_lossy()));
                    }
                    line.push(b' ');
                    let mut kv = k.as_bytes().to_vec();
                    kv.push(b'=');
                    kv.extend_from_slice(v.as_bytes());
                    quote_into(&mut line, OsStr::from_bytes(&kv));
                }
                line.push(b' ');
                line.extend_from_slice(spawn_var.as_bytes());
                line.push(b' ');
                quote_into(&mut line, exe.as_os_str());
                for a in args {
                    line.push(b' ');
                    quote_into(&mut line, a);
                }
                self.remote_shell(&line)
            }
        }
    }

    /// The ssh command that runs `line` (a shell command line, quoted
    /// already) on the far host: `ssh <args> -T [-p port] -- <dest>
    /// <line>`. `Err` for a launcher that is not ssh, or a destination that
    /// is not one.
    pub(crate) fn remote_shell(&self, line: &[u8]) -> Result<Command, String> {
        let Kind::Ssh(host) = &self.kind else { return Err("not an ssh launcher".into()) };
        if host.is_empty() || host.starts_with('-') {
            return Err(format!("{host:?} is not an ssh destination"));
        }
        let (dest, port) = split_port(host);
        let mut out: Vec<OsString> = self.args.clone();
        out.push("-T".into());
        if let Some(p) = port {
            out.extend(["-p".into(), p.into()]);
        }
        out.extend(["--".into(), dest.into(), OsString::from_vec(line.to_vec())]);
        Ok(Command { program: "ssh".into(), args: out })
    }
}

/// A launcher's command: the program and its arguments.
#[derive(Debug)]
pub(crate) struct Command {
    pub(crate) program: OsString,
    pub(crate) args: Vec<OsString>,
}

/// What a remote command line sets up for the executable (ssh only: a
/// prefix's command gets the environment as a local process does).
#[derive(Debug, Default)]
pub(crate) struct RemoteEnv<'a> {
    pub(crate) clear: bool,
    pub(crate) remove: Vec<&'a OsStr>,
    pub(crate) set: Vec<(&'a OsStr, &'a OsStr)>,
    pub(crate) dir: Option<&'a Path>,
}

/// `user@host:port` → (`user@host`, `port`); `[v6]:port` → (`v6`, `port`);
/// anything else unchanged (a bare IPv6 address, a config `Host`).
fn split_port(host: &str) -> (String, Option<String>) {
    let (user, rest) = match host.rsplit_once('@') {
        Some((u, r)) => (format!("{u}@"), r),
        None => (String::new(), host),
    };
    if let Some(inner) = rest.strip_prefix('[') {
        return match inner.split_once(']') {
            Some((h, tail)) => {
                let port = tail.strip_prefix(':').filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
                (format!("{user}{h}"), port.map(str::to_owned))
            }
            None => (host.to_owned(), None),
        };
    }
    match rest.split_once(':') {
        Some((h, p)) if !p.contains(':') && !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            (format!("{user}{h}"), Some(p.to_owned()))
        }
        _ => (host.to_owned(), None),
    }
}

/// `s` quoted for a POSIX shell: in single quotes, each `'` as `'\''`.
fn quote_into(out: &mut Vec<u8>, s: &OsStr) {
    out.push(b'\'');
    for &b in s.as_bytes() {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
}

/// The address a child started through a launcher connects back to:
/// `named` (from `SpawnOptions::connect_back`) when given, else a TCP
/// address this actor listens on that names a host (not `0.0.0.0`/`::`,
/// not port 0). `Err` says exactly what to set.
pub(crate) fn connect_back(named: Option<&Addr>, listening: &[Addr], launcher: &Launcher) -> Result<Addr, String> {
    fn unspecified(hp: &str) -> bool {
        hp.parse::<std::net::SocketAddr>().is_ok_and(|a| a.ip().is_unspecified())
    }
    if let Some(a) = named {
        return match a {
            Addr::Tcp(hp) if unspecified(hp) => Err(format!(
                "SpawnOptions::connect_back({a}) names no host: give an address of this host that {} can reach",
                launcher.describe()
            )),
            Addr::Tcp(hp) if hp.ends_with(":0") => {
                Err(format!("SpawnOptions::connect_back({a}) names no port: give the port this actor listens on"))
            }
            Addr::Tcp(_) => Ok(a.clone()),
            Addr::Uds(_) => Err(format!(
                "SpawnOptions::connect_back({a}) is a UDS address: a child started through {} connects back over TCP",
                launcher.describe()
            )),
        };
    }
    let tcp: Vec<&Addr> = listening.iter().filter(|a| matches!(a, Addr::Tcp(_))).collect();
    if let Some(a) = tcp.iter().find(|a| matches!(a, Addr::Tcp(hp) if !unspecified(hp))) {
        return Ok((*a).clone());
    }
    match tcp.first() {
        Some(a) => Err(format!(
            "a child started through {} connects back over TCP, and this actor listens on {a} only, which names \
             no host: set SpawnOptions::connect_back(\"tcp://<address of this host>:{}\") to the address it can \
             reach",
            launcher.describe(),
            a.to_string().rsplit(':').next().unwrap_or("PORT")
        )),
        None => Err(format!(
            "a child started through {} connects back over TCP, and this actor listens on no TCP address: bind one \
             that it can reach (Config::bind, or SpawnOptions::bind for a child that spawns), or name one with \
             SpawnOptions::connect_back",
            launcher.describe()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_split_their_port() {
        let s = |h: &str| split_port(h);
        assert_eq!(s("me@gpu3:2222"), ("me@gpu3".into(), Some("2222".into())));
        assert_eq!(s("gpu3"), ("gpu3".into(), None));
        assert_eq!(s("[fe80::1]:22"), ("fe80::1".into(), Some("22".into())));
        assert_eq!(s("me@[::1]"), ("me@::1".into(), None));
        assert_eq!(s("fe80::1"), ("fe80::1".into(), None));
    }

    #[test]
    fn the_remote_command_is_quoted_for_the_shell() {
        let l = Launcher::ssh("me@h:22").args(["-F", "cfg"]);
        let cmd = l
            .command(
                Path::new("/opt/it's here/bin"),
                &["a b".into()],
                &RemoteEnv { set: vec![(OsStr::new("RUST_LOG"), OsStr::new("debug"))], ..Default::default() },
            )
            .expect("command");
        assert_eq!(cmd.program, "ssh");
        let args: Vec<_> = cmd.args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(&args[..6], ["-F", "cfg", "-T", "-p", "22", "--"]);
        assert_eq!(args[6], "me@h");
        assert_eq!(args[7], "exec env 'RUST_LOG=debug' FURROW_SPAWN=stdin '/opt/it'\\''s here/bin' 'a b'");
        assert!(Launcher::ssh("-oProxyCommand=x").command(Path::new("/x"), &[], &RemoteEnv::default()).is_err());
        assert!(Launcher::prefix(Vec::<String>::new()).command(Path::new("/x"), &[], &RemoteEnv::default()).is_err());
    }

    #[test]
    fn the_address_to_connect_back_to_must_name_a_host() {
        let l = Launcher::ssh("h");
        let a = |s: &str| s.parse::<Addr>().expect("addr");
        let any = [a("uds:///tmp/x.sock"), a("tcp://0.0.0.0:7000")];
        let e = connect_back(None, &any, &l).unwrap_err();
        assert!(e.contains("SpawnOptions::connect_back(\"tcp://<address of this host>:7000\")"), "{e}");
        assert!(connect_back(None, &any[..1], &l).unwrap_err().contains("no TCP address"));
        assert_eq!(connect_back(Some(&a("tcp://10.0.0.1:7000")), &any, &l), Ok(a("tcp://10.0.0.1:7000")));
        assert!(connect_back(Some(&a("tcp://0.0.0.0:7000")), &any, &l).is_err());
        let named = [a("tcp://0.0.0.0:1"), a("tcp://10.1.1.1:2")];
        assert_eq!(connect_back(None, &named, &l), Ok(a("tcp://10.1.1.1:2")));
    }
}
