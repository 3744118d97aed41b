//! A far host for tests: a real OpenSSH server in a network namespace of
//! the test's own, reached over a veth pair.
//!
//! ```text
//!  this namespace                      namespace furrow-ssh-<pid>-<n>
//!  veth fsn<k>  10.A.B.1/24  ───────  veth fsf<k>  10.A.B.2/24
//!  (the test's root binds here)        sshd -D -e -f <dir>/sshd_config
//!                                      (UTS namespace of its own:
//!                                       host name far-<pid>-<n>)
//! ```
//!
//! The host key and the user key are generated (`ssh-keygen`) in a
//! directory of the fixture's own, with `authorized_keys` for root,
//! `StrictModes no` and `UsePAM no`. The client side is an `ssh_config`
//! there too (`-F`): the key, a `known_hosts` holding the host key,
//! `BatchMode yes`. The far host shares this host's filesystem, so the
//! test binary is at the same path there. Dropping the fixture ends sshd
//! (by pid), deletes the namespace (and with it the veth pair) and the
//! directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Where sshd is installed (Debian's `openssh-server`).
///
/// ```no_run
/// if !std::path::Path::new(furrow_testing::ssh::SSHD).exists() {
///     furrow_testing::skip("needs sshd");
/// }
/// ```
pub const SSHD: &str = "/usr/sbin/sshd";

/// One far host: sshd in a network namespace, and the client
/// configuration that reaches it.
///
/// ```no_run
/// #[furrow_testing::test]
/// async fn runs_far_away() -> anyhow::Result<()> {
///     let far = furrow_testing::ssh::SshHost::start_or_skip();
///     let opts = furrow::SpawnOptions::new().launcher(far.launcher()).connect_back(far.connect_back(7700));
///     # let _ = opts;
///     Ok(())
/// }
/// ```
#[derive(Debug)]
pub struct SshHost {
    dir: PathBuf,
    sshd: Option<std::process::Child>,
    net: FarNetns,
    far: String,
    hostname: String,
}

/// Fixtures made by this process, for unique names.
static MADE: AtomicU32 = AtomicU32::new(0);

/// A network namespace of the test's own, joined to this one by a veth
/// pair (`10.A.B.1` here, `10.A.B.2` there); deleted when dropped. Names
/// and addresses are unique per test process, so tests run in parallel.
///
/// ```no_run
/// let far = furrow_testing::ssh::FarNetns::start().unwrap_or_else(|why| furrow_testing::skip(why));
/// let prefix = furrow::Launcher::prefix(["ip", "netns", "exec", far.name()]);
/// # let _ = prefix;
/// ```
#[derive(Debug)]
pub struct FarNetns {
    name: String,
    near_if: String,
    far_if: String,
    near: String,
    far: String,
}

impl FarNetns {
    /// Make one. `Err` says why this machine cannot (not root, no `ip`).
    ///
    /// ```no_run
    /// match furrow_testing::ssh::FarNetns::start() {
    ///     Ok(ns) => println!("namespace {}", ns.name()),
    ///     Err(why) => furrow_testing::skip(why),
    /// }
    /// ```
    pub fn start() -> Result<FarNetns, String> {
        if !crate::sys::is_root() {
            return Err("needs root: it creates a network namespace".into());
        }
        let n = MADE.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // A /24 per namespace, from the pid and the count.
        let k = (pid.wrapping_mul(4) + n) % 16384;
        let (a, b) = (100 + k / 256, k % 256);
        // Interface names are at most 15 bytes.
        let (vn, vf) = (tail(&format!("fsn{pid}x{n}"), 15), tail(&format!("fsf{pid}x{n}"), 15));
        let net = FarNetns {
            name: format!("furrow-ssh-{pid}-{n}"),
            near_if: vn.clone(),
            far_if: vf.clone(),
            near: format!("10.{a}.{b}.1"),
            far: format!("10.{a}.{b}.2"),
        };
        run("ip", &["netns", "add", &net.name])?;
        run("ip", &["link", "add", &vn, "type", "veth", "peer", "name", &vf])?;
        run("ip", &["link", "set", &vf, "netns", &net.name])?;
        run("ip", &["addr", "add", &format!("{}/24", net.near), "dev", &vn])?;
        run("ip", &["link", "set", &vn, "up"])?;
        run("ip", &["-n", &net.name, "addr", "add", &format!("{}/24", net.far), "dev", &vf])?;
        run("ip", &["-n", &net.name, "link", "set", &vf, "up"])?;
        run("ip", &["-n", &net.name, "link", "set", "lo", "up"])?;
        Ok(net)
    }

    /// Its name (for `ip netns exec`).
    ///
    /// ```no_run
    /// let ns = furrow_testing::ssh::FarNetns::start().unwrap_or_else(|why| furrow_testing::skip(why));
    /// let prefix = furrow::Launcher::prefix(["ip", "netns", "exec", ns.name()]);
    /// # let _ = prefix;
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This side's address on the link.
    ///
    /// ```no_run
    /// let ns = furrow_testing::ssh::FarNetns::start().unwrap_or_else(|why| furrow_testing::skip(why));
    /// let bind: furrow::Addr = format!("tcp://{}:0", ns.near_addr()).parse().expect("address");
    /// # let _ = bind;
    /// ```
    pub fn near_addr(&self) -> &str {
        &self.near
    }

    /// The far side's address.
    ///
    /// ```no_run
    /// let ns = furrow_testing::ssh::FarNetns::start().unwrap_or_else(|why| furrow_testing::skip(why));
    /// println!("far side: {}", ns.far_addr());
    /// ```
    pub fn far_addr(&self) -> &str {
        &self.far
    }

    /// Cut the link: the far end of the veth pair is set down. Nothing
    /// is reset: packets are dropped from then on, as on a pulled cable or
    /// a dead switch, so each side learns it only from its own timers
    /// (ssh's `ServerAliveInterval`, sshd's `ClientAliveInterval`,
    /// furrow's keepalive).
    ///
    /// ```no_run
    /// let ns = furrow_testing::ssh::FarNetns::start().unwrap_or_else(|why| furrow_testing::skip(why));
    /// ns.cut().expect("link down");
    /// ```
    pub fn cut(&self) -> Result<(), String> {
        run("ip", &["-n", &self.name, "link", "set", &self.far_if, "down"])
    }
}

impl Drop for FarNetns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the veth pair, and
        // with it ours; ours is deleted by name too, in case the pair never
        // made it there.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).stderr(Stdio::null()).status();
        let _ = Command::new("ip").args(["link", "del", &self.near_if]).stderr(Stdio::null()).status();
    }
}

impl SshHost {
    /// Start one, or end the test as ignored ([`skip`](crate::skip)) with
    /// the reason this machine cannot (not root, no sshd, no `ip netns`).
    ///
    /// ```no_run
    /// let far = furrow_testing::ssh::SshHost::start_or_skip();
    /// println!("sshd on {}", far.destination());
    /// ```
    pub fn start_or_skip() -> SshHost {
        match SshHost::start() {
            Ok(h) => h,
            Err(why) => crate::skip(why),
        }
    }

    /// Start one. `Err` says why this machine cannot.
    ///
    /// ```no_run
    /// match furrow_testing::ssh::SshHost::start() {
    ///     Ok(far) => println!("sshd on {}", far.destination()),
    ///     Err(why) => println!("no far host here: {why}"),
    /// }
    /// ```
    pub fn start() -> Result<SshHost, String> {
        SshHost::start_with_env(&[])
    }

    /// Start one whose sessions get `env` on top of sshd's own (its
    /// `SetEnv`: it overrides what sshd sets, `PATH` included). Every
    /// session has `XDG_CACHE_HOME` set to a directory of the fixture's,
    /// so a shipped executable (`Launcher::ship`) lands there, not in
    /// this machine's `~/.cache`, and goes with the fixture.
    ///
    /// ```no_run
    /// let far = furrow_testing::ssh::SshHost::start_with_env(&[("PATH", "/opt/shim:/usr/bin:/bin")])
    ///     .unwrap_or_else(|why| furrow_testing::skip(why));
    /// # let _ = far;
    /// ```
    pub fn start_with_env(env: &[(&str, &str)]) -> Result<SshHost, String> {
        if !Path::new(SSHD).exists() {
            return Err(format!("needs sshd ({SSHD} is missing: install openssh-server)"));
        }
        let net = FarNetns::start()?;
        let dir = std::env::temp_dir().join(&net.name);
        let far = net.far.clone();
        let hostname = net.name.replace("furrow-ssh-", "far-");
        let mut host = SshHost { dir, sshd: None, net, far, hostname };
        std::fs::create_dir_all(&host.dir).map_err(|e| format!("cannot create {}: {e}", host.dir.display()))?;
        host.keys(env)?;
        host.start_sshd()?;
        Ok(host)
    }

    fn path(&self, f: &str) -> PathBuf {
        self.dir.join(f)
    }

    /// The keys and both configurations.
    fn keys(&self, env: &[(&str, &str)]) -> Result<(), String> {
        for key in ["host_key", "user_key"] {
            let f = self.path(key);
            run("ssh-keygen", &["-q", "-t", "ed25519", "-N", "", "-C", "furrow-test", "-f", &f.to_string_lossy()])?;
        }
        let read = |f: &str| std::fs::read_to_string(self.path(f)).map_err(|e| format!("cannot read {f}: {e}"));
        let write =
            |f: &str, text: &str| std::fs::write(self.path(f), text).map_err(|e| format!("cannot write {f}: {e}"));
        write("authorized_keys", &read("user_key.pub")?)?;
        write("known_hosts", &format!("{} {}", self.far, read("host_key.pub")?))?;
        let d = self.dir.display();
        write(
            "sshd_config",
            &format!(
                "ListenAddress {far}:22\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n\
                 PidFile none\nStrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                 AllowTcpForwarding no\nX11Forwarding no\nPrintMotd no\nLogLevel VERBOSE\n\
                 ClientAliveInterval 1\nClientAliveCountMax 3\nSetEnv XDG_CACHE_HOME={d}/cache{extra}\n",
                far = self.far,
                extra = env.iter().map(|(k, v)| format!(" {k}={v}")).collect::<String>(),
            ),
        )?;
        write(
            "ssh_config",
            &format!(
                "Host *\n  IdentityFile {d}/user_key\n  IdentitiesOnly yes\n  UserKnownHostsFile {d}/known_hosts\n  \
                 GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  BatchMode yes\n  LogLevel ERROR\n  \
                 ConnectTimeout 5\n  ControlMaster no\n  ControlPath none\n"
            ),
        )?;
        // sshd refuses to start without its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        Ok(())
    }

    fn start_sshd(&mut self) -> Result<(), String> {
        let log = std::fs::File::create(self.path("sshd.log")).map_err(|e| format!("sshd.log: {e}"))?;
        let cfg = self.path("sshd_config");
        // A UTS namespace of its own, named: a far host has a host name of
        // its own, which its actors report (`ActorInfo::host`, their log
        // lines). `ip netns exec`, `unshare` and `sh` each exec the next,
        // so the pid is sshd's.
        let child = Command::new("ip")
            .args(["netns", "exec", &self.net.name, "unshare", "--uts", "--", "sh", "-c"])
            .arg("hostname \"$0\" && exec \"$@\"")
            .arg(&self.hostname)
            .args([SSHD, "-D", "-e", "-f"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start sshd: {e}"))?;
        self.sshd = Some(child);
        // Listening once a connection to its port succeeds.
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr: std::net::SocketAddr =
            format!("{}:22", self.far).parse().map_err(|e| format!("bad address {}: {e}", self.far))?;
        loop {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Some(Ok(Some(st))) = self.sshd.as_mut().map(std::process::Child::try_wait) {
                return Err(format!("sshd exited with {st}: {}", self.sshd_log()));
            }
            if Instant::now() > deadline {
                return Err(format!("sshd does not listen on {addr} after 10 s: {}", self.sshd_log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What sshd logged so far (for a failing test's message).
    ///
    /// ```no_run
    /// let far = furrow_testing::ssh::SshHost::start_or_skip();
    /// eprintln!("{}", far.sshd_log());
    /// ```
    pub fn sshd_log(&self) -> String {
        std::fs::read_to_string(self.path("sshd.log")).unwrap_or_default()
    }

    /// The ssh destination: `root@<far address>:22`.
    ///
    /// ```no_run
    /// let far = furrow_testing::ssh::SshHost::start_or_skip();
    /// assert!(far.destination().starts_with("root@"));
    /// ```
    pub fn destination(&self) -> String {
        format!("root@{}:22", self.far)
    }

    /// The far host's name (its UTS namespace's: `far-<pid>-<n>`), what
    /// its actors report as their host.
    ///
    /// ```no_run
    /// let far = furrow_testing::ssh::SshHost::start_or_skip();
    /// assert!(far.hostname().starts_with("far-"));
    /// ```
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The far host's address.
    ///
    /// ```no_run
    /// let far = furrow_testing::ssh::SshHost::start_or_skip();
    /// let _pings = std::process::Command::new("ping").args(["-c1", far.far_addr()]).status();
    /// ```
    pub fn far_addr(&self) -> &str {
        &self.far
    }

    /// This side's address on the link (what the far side reaches us at).
    ///
    /// ```no_run
    /// let far = furrow_testing::ssh::SshHost::start_or_skip();
    /// let bind: furrow::Addr = format!("tcp://{}:0", far.near_addr()).parse().expect("address");
    /// # let _ = bind;
    /// ```
    pub fn near_addr(&self) -> &str {
        &self.net.near
    }

    /// The network namespace sshd runs in.
    ///
    /// ```no_run
    /// let far = furrow_testing::ssh::SshHost::start_or_skip();
    /// let _ = std::process::Command::new("ip").args(["netns", "pids", far.netns()]).status();
    /// ```
    pub fn netns(&self) -> &str {
        &self.net.name
    }

    /// Cut the network between this side and the far host, without a
    /// reset ([`FarNetns::cut`]). sshd gives up a silent client after 4 s
    /// (`ClientAliveInterval 1`, `ClientAliveCountMax 3`), which closes the
    /// far child's stdin; ssh here notices only with `ServerAliveInterval`
    /// set (this fixture's client configuration does not: add `-o
    /// ServerAliveInterval=1` to the launcher to have it).
    ///
    /// ```no_run
    /// let far = furrow_testing::ssh::SshHost::start_or_skip();
    /// far.cut().expect("link down");
    /// ```
    pub fn cut(&self) -> Result<(), String> {
        self.net.cut()
    }

    /// The far sessions' cache directory (their `XDG_CACHE_HOME`): where
    /// a shipped executable lands (`furrow/bin/<hash>/<name>` in it).
    ///
    /// ```no_run
    /// let far = furrow_testing::ssh::SshHost::start_or_skip();
    /// println!("{}", far.cache_dir().join("furrow/bin").display());
    /// ```
    pub fn cache_dir(&self) -> PathBuf {
        self.path("cache")
    }

    /// The client configuration (`ssh -F`).
    ///
    /// ```no_run
    /// let far = furrow_testing::ssh::SshHost::start_or_skip();
    /// let _ = std::process::Command::new("ssh").arg("-F").arg(far.ssh_config()).arg(far.destination()).arg("true").status();
    /// ```
    pub fn ssh_config(&self) -> PathBuf {
        self.path("ssh_config")
    }

    /// A launcher that reaches this host: `ssh -F <config> root@<far>:22`.
    ///
    /// ```no_run
    /// let far = furrow_testing::ssh::SshHost::start_or_skip();
    /// let opts = furrow::SpawnOptions::new().launcher(far.launcher());
    /// # let _ = opts;
    /// ```
    pub fn launcher(&self) -> furrow::Launcher {
        furrow::Launcher::ssh(self.destination()).args([std::ffi::OsString::from("-F"), self.ssh_config().into()])
    }

    /// A launcher that reaches this host with a key it does not accept
    /// (generated on first use): for tests of a refused login.
    ///
    /// ```no_run
    /// let far = furrow_testing::ssh::SshHost::start_or_skip();
    /// let refused = furrow::SpawnOptions::new().launcher(far.stranger_launcher().expect("a key"));
    /// # let _ = refused;
    /// ```
    pub fn stranger_launcher(&self) -> Result<furrow::Launcher, String> {
        let key = self.path("stranger_key");
        if !key.exists() {
            run("ssh-keygen", &["-q", "-t", "ed25519", "-N", "", "-C", "stranger", "-f", &key.to_string_lossy()])?;
        }
        let cfg = std::fs::read_to_string(self.ssh_config()).map_err(|e| format!("ssh_config: {e}"))?;
        let cfg = cfg.replace(&format!("{}/user_key", self.dir.display()), &key.to_string_lossy());
        let path = self.path("ssh_config_stranger");
        std::fs::write(&path, cfg).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(furrow::Launcher::ssh(self.destination()).args([std::ffi::OsString::from("-F"), path.into()]))
    }

    /// `tcp://<near address>:<port>`: where a far child connects back to a
    /// root that binds `near_addr` on `port`.
    ///
    /// ```no_run
    /// let far = furrow_testing::ssh::SshHost::start_or_skip();
    /// let opts = furrow::SpawnOptions::new().launcher(far.launcher()).connect_back(far.connect_back(7700));
    /// # let _ = opts;
    /// ```
    pub fn connect_back(&self, port: u16) -> furrow::Addr {
        furrow::Addr::Tcp(format!("{}:{port}", self.net.near))
    }

    /// `tcp://<near address>:0`, for the test root's `Config::bind`.
    ///
    /// ```no_run
    /// let far = furrow_testing::ssh::SshHost::start_or_skip();
    /// let root = furrow_testing::root_config().bind([far.bind_addr()]);
    /// # let _ = root;
    /// ```
    pub fn bind_addr(&self) -> furrow::Addr {
        furrow::Addr::Tcp(format!("{}:0", self.net.near))
    }
}

impl Drop for SshHost {
    fn drop(&mut self) {
        if let Some(mut sshd) = self.sshd.take() {
            // `ip netns exec` exec'd sshd: this pid is sshd's.
            // Our own unreaped child.
            crate::sys::kill(sshd.id() as i32, rustix::process::Signal::TERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(sshd.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = sshd.kill();
            let _ = sshd.wait();
        }
        // sshd's own processes that outlived their parent (a pre-auth
        // child of a refused login, say) were adopted by this subreaper:
        // reaped here, so the test's leak check sees only what the test
        // itself left.
        let me = std::process::id() as i32;
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let adopted: Vec<_> =
                crate::descendants(me).into_iter().filter(|d| d.ppid == me && d.comm.starts_with("sshd")).collect();
            for z in adopted.iter().filter(|d| d.state == 'Z') {
                // Our own (adopted) exited child.
                crate::sys::reap(z.pid);
            }
            if adopted.iter().all(|d| d.state == 'Z') || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // (The namespace goes with `net`, dropped after this.)
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The last `n` bytes of an ASCII name.
fn tail(s: &str, n: usize) -> String {
    s[s.len().saturating_sub(n)..].to_owned()
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}
