//! A booted instance's network: its own network namespace, one veth pair to the host, an address
//! from the fleet's private /24, and the instance metadata address on its loopback.
//!
//! Slot `i` of the fleet's /24 `N.0/24` is the /30 `N.(4i)/30`: the host end `N.(4i+1)` on
//! `ve-<name>`, the instance `N.(4i+2)` on `host0`. Nothing else is configured: no default route
//! in the instance, no IPv6 address on either end (`addrgenmode none`: no link-local address the
//! instance could reach the host's IPv6 services by), no forwarding or NAT on the host, no
//! change to the host's other interfaces, sysctls or firewall. The namespace is made here,
//! before the container boots, so the metadata service and the relay to the emulator are up
//! before the instance's systemd starts its first unit; `systemd-nspawn
//! --network-namespace-path` then boots the container in it.
//!
//! Slots are taken with an exclusive `flock` on `/run/bake-e2e/net/<base>.<i>.lock`, held as long
//! as the [`Slot`] lives (the kernel releases it when the test process dies), and a slot whose
//! addresses or interface name are already on the host is skipped.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};
use nix::fcntl::{Flock, FlockArg};
use nix::sched::CloneFlags;

/// The fleet's /24 unless a test names another.
pub const DEFAULT_FLEET_NET: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 0);
/// Where EC2's instance metadata service answers, on every instance.
pub const IMDS_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// Slots per /24 (64 /30s).
pub const SLOTS: u8 = 64;

const LOCK_DIR: &str = "/run/bake-e2e/net";

/// One /30 of the fleet's /24, held until dropped.
#[derive(Debug)]
pub struct Slot {
    base: Ipv4Addr,
    index: u8,
    _lock: Flock<File>,
}

impl Slot {
    /// Takes the first free slot of `base` (a /24: its last octet must be 0).
    pub fn take(base: Ipv4Addr) -> anyhow::Result<Self> {
        let [a, b, c, d] = base.octets();
        if d != 0 {
            bail!("fleet network {base}: must be the network address of a /24 (N.N.N.0)");
        }
        if !base.is_private() {
            bail!("fleet network {base}/24 is not a private (RFC 1918) network");
        }
        std::fs::create_dir_all(LOCK_DIR).with_context(|| format!("creating {LOCK_DIR}"))?;
        let on_host = host_addresses()?;
        for index in 0..SLOTS {
            let path = format!("{LOCK_DIR}/{a}.{b}.{c}.{index}.lock");
            let f = File::create(&path).with_context(|| format!("creating {path}"))?;
            let Ok(lock) = Flock::lock(f, FlockArg::LockExclusiveNonblock) else {
                continue;
            };
            let slot = Self {
                base,
                index,
                _lock: lock,
            };
            let taken = on_host.contains(&slot.host_addr())
                || on_host.contains(&slot.instance_addr())
                || Path::new("/sys/class/net").join(slot.veth()).exists();
            if !taken {
                return Ok(slot);
            }
        }
        bail!("no free /30 left in the fleet network {base}/24 ({SLOTS} slots)")
    }

    /// The slot number `i` (the /30 `N.(4i)/30`).
    #[must_use]
    pub fn index(&self) -> u8 {
        self.index
    }

    fn octet(&self, n: u8) -> Ipv4Addr {
        slot_addr(self.base, self.index, n)
    }

    /// The host end, `N.(4i+1)`.
    #[must_use]
    pub fn host_addr(&self) -> Ipv4Addr {
        self.octet(1)
    }

    /// The instance's address, `N.(4i+2)`.
    #[must_use]
    pub fn instance_addr(&self) -> Ipv4Addr {
        self.octet(2)
    }

    /// The container's machine name, `bk-<i>` (short: the host end `ve-<name>` must fit the
    /// kernel's 15-character interface names, or nspawn would hash it).
    #[must_use]
    pub fn machine(&self) -> String {
        format!("bk-{}", self.index)
    }

    /// The host end's interface, `ve-<machine>`.
    #[must_use]
    pub fn veth(&self) -> String {
        format!("ve-{}", self.machine())
    }
}

/// Address `n` (0..4) of slot `index` of the /24 `base`: `N.(4·index + n)`.
fn slot_addr(base: Ipv4Addr, index: u8, n: u8) -> Ipv4Addr {
    let [a, b, c, _] = base.octets();
    Ipv4Addr::new(a, b, c, index * 4 + n)
}

/// IPv4 addresses on the host's interfaces.
fn host_addresses() -> anyhow::Result<Vec<Ipv4Addr>> {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .context("running ip -4 addr show")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            w.find(|x| *x == "inet")?;
            w.next()?.split('/').next()?.parse().ok()
        })
        .collect())
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("running ip {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The instance's network namespace with its veth pair, and the metadata service's listening
/// socket bound inside it. Dropping it deletes the veth pair (both ends); the namespace itself
/// goes once the last process, socket and handle in it are gone.
#[derive(Debug)]
pub struct Netns {
    ns: File,
    veth: String,
}

impl Netns {
    /// Makes the namespace for `slot`: `lo` up with [`IMDS_ADDR`]`/32`, `host0` with the
    /// instance's address, the host end `ve-<name>` with the host's; returns it with a listener
    /// bound to `169.254.169.254:80` inside it.
    pub fn create(slot: &Slot) -> anyhow::Result<(Self, TcpListener)> {
        let veth = slot.veth();
        let inst = format!("{}/30", slot.instance_addr());
        let host_pid = std::process::id().to_string();
        let v = veth.clone();
        // unshare(CLONE_NEWNET) changes only the calling thread: a thread of its own, whose
        // children (`ip`) and sockets are in the new namespace, and which ends right after.
        let made = std::thread::Builder::new()
            .name("netns-setup".into())
            .spawn(move || -> anyhow::Result<(File, TcpListener)> {
                nix::sched::unshare(CloneFlags::CLONE_NEWNET)
                    .context("unshare(CLONE_NEWNET): a new network namespace needs root")?;
                let ns = File::open("/proc/thread-self/ns/net")
                    .context("opening the new network namespace")?;
                ip(&["link", "set", "lo", "up"])?;
                ip(&["addr", "add", &format!("{IMDS_ADDR}/32"), "dev", "lo"])?;
                // The peer goes straight to the host's namespace (that of this process).
                ip(&[
                    "link", "add", "host0", "type", "veth", "peer", "name", &v, "netns", &host_pid,
                ])?;
                ip(&["link", "set", "host0", "addrgenmode", "none"])?;
                ip(&["addr", "add", &inst, "dev", "host0"])?;
                ip(&["link", "set", "host0", "up"])?;
                let listener = TcpListener::bind(SocketAddr::from((IMDS_ADDR, 80)))
                    .context("binding 169.254.169.254:80 in the instance's namespace")?;
                Ok((ns, listener))
            })
            .context("starting the namespace thread")?
            .join()
            .map_err(|_| anyhow::anyhow!("the namespace thread panicked"))?;
        let (ns, listener) = made?;
        let me = Self { ns, veth };
        ip(&["link", "set", &me.veth, "addrgenmode", "none"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/30", slot.host_addr()),
            "dev",
            &me.veth,
        ])?;
        ip(&["link", "set", &me.veth, "up"])?;
        Ok((me, listener))
    }

    /// A path that names the namespace while this handle lives (for `--network-namespace-path`).
    #[must_use]
    pub fn path(&self) -> String {
        format!("/proc/{}/fd/{}", std::process::id(), self.ns.as_raw_fd())
    }

    /// The host end's interface name.
    #[must_use]
    pub fn veth(&self) -> &str {
        &self.veth
    }

    /// Runs `f` on a thread that has joined the namespace (sockets it makes stay in there).
    pub fn run_in<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let ns = self.ns.try_clone()?;
        std::thread::spawn(move || -> anyhow::Result<T> {
            nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET).context("setns into the instance")?;
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("a thread in the instance's namespace panicked"))?
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting one end deletes the pair; the routes to the /30 go with the host end.
        if Path::new("/sys/class/net").join(&self.veth).exists() {
            let _ = ip(&["link", "del", &self.veth]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_slot_addresses_follow_the_fleet_plan() {
        // Slot i = N.(4i)/30: host end .4i+1, instance .4i+2.
        assert_eq!(
            slot_addr(DEFAULT_FLEET_NET, 0, 1),
            Ipv4Addr::new(10, 231, 0, 1)
        );
        assert_eq!(
            slot_addr(DEFAULT_FLEET_NET, 0, 2),
            Ipv4Addr::new(10, 231, 0, 2)
        );
        assert_eq!(
            slot_addr(DEFAULT_FLEET_NET, 5, 1),
            Ipv4Addr::new(10, 231, 0, 21)
        );
        assert_eq!(
            slot_addr(DEFAULT_FLEET_NET, 5, 2),
            Ipv4Addr::new(10, 231, 0, 22)
        );
        assert_eq!(
            slot_addr(DEFAULT_FLEET_NET, SLOTS - 1, 2),
            Ipv4Addr::new(10, 231, 0, 254)
        );
    }

    #[test]
    fn test_fleet_network_must_be_a_private_slash_24() {
        let e = Slot::take(Ipv4Addr::new(10, 231, 0, 4)).unwrap_err();
        assert!(e.to_string().contains("network address of a /24"), "{e}");
        let e = Slot::take(Ipv4Addr::new(8, 8, 8, 0)).unwrap_err();
        assert!(e.to_string().contains("not a private"), "{e}");
    }
}
