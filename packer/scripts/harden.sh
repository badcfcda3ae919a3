#!/usr/bin/env bash
# Hardens the image: a CIS Level 1 subset for Debian 12 (and Amazon Linux 2023 where the same
# settings apply). Runs as root, either on the Packer build instance (through Session Manager) or
# in a chroot made by tests/infra/run, so it must not need a running systemd, kernel module
# loading or network services: everything is written as configuration that takes effect at the
# next boot of an instance launched from the AMI. Idempotent: running it twice gives the same files.
#
# Environment:
#   BAKE_HARDEN_PACKAGES=0         skip installing/removing packages (config files only)
#   BAKE_HARDEN_KEEP_APT_CACHE=1   keep downloaded .debs (tests/infra caches them between runs)
#   BAKE_HARDEN_AIDE_INIT=1        build the AIDE database (slow; the Packer build sets it)
set -euo pipefail
umask 022
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

log() { printf 'harden: %s\n' "$*" >&2; }

if command -v apt-get >/dev/null 2>&1; then
  pkg=apt
elif command -v dnf >/dev/null 2>&1; then
  pkg=dnf
else
  log "neither apt-get nor dnf found"; exit 1
fi

# write FILE MODE: content from stdin, replaced atomically so a half-written file never exists.
write() {
  local file=$1 mode=$2 tmp
  mkdir -p "$(dirname "$file")"
  tmp=$(mktemp "$file.XXXXXX")
  cat >"$tmp"
  chmod "$mode" "$tmp"
  chown root:root "$tmp"
  mv -f "$tmp" "$file"
}

# set_kv FILE KEY VALUE: exactly one "KEY<TAB>VALUE" line in a whitespace-separated config
# (login.defs): every active KEY line is dropped, comments are kept, the new line is appended.
set_kv() {
  local file=$1 key=$2 value=$3
  touch "$file"
  sed -i -E "/^[[:space:]]*${key}[[:space:]]/d" "$file"
  printf '%s\t%s\n' "$key" "$value" >>"$file"
}

# ---------------------------------------------------------------- packages
if [[ "${BAKE_HARDEN_PACKAGES:-1}" == 1 ]]; then
  log "packages"
  if [[ $pkg == apt ]]; then
    # auditd: audit trail (CIS 4.1); acct + sysstat: process and resource accounting;
    # libpam-pwquality: password strength; libpam-tmpdir: per-user $TMPDIR; aide: file integrity;
    # usbguard: no USB device is authorised (an EC2 instance has none); chkrootkit: malware scan; debsums/apt-show-versions/needrestart/apt-listchanges: package
    # verification and patch visibility; nftables: host firewall; apparmor: MAC (CIS 1.6);
    # systemd-timesyncd: time sync (CIS 2.1); rsyslog: local log files the agent ships;
    # unattended-upgrades is deliberately NOT installed: the image is immutable, patches arrive
    # as a new AMI.
    # Security updates at build time: the image is the only way patches reach the fleet.
    if ! grep -rqs -- '-security' /etc/apt/sources.list /etc/apt/sources.list.d/; then
      codename=$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release)
      echo "deb http://deb.debian.org/debian-security ${codename}-security main" \
        >/etc/apt/sources.list.d/debian-security.list
    fi
    apt-get update -qq
    apt-get dist-upgrade -y -qq >/dev/null
    apt-get install -y -qq --no-install-recommends \
      usbguard auditd audispd-plugins acct sysstat libpam-pwquality libpam-tmpdir aide aide-common \
      chkrootkit debsums apt-show-versions needrestart apt-listchanges nftables apparmor \
      apparmor-utils systemd-timesyncd rsyslog logrotate ca-certificates >/dev/null
    # Unused services and packages (CIS 2.2): none of these is needed by the app or the agent.
    # Session Manager replaces SSH; the fleet has no printers, mail, NFS server or X.
    # openssh-server is not removed here: Packer's communicator is SSH over Session Manager and
    # opens a new session for every later script; cleanup.sh removes it as its very last step.
    for p in telnet telnetd rsh-client rsh-server nis talk talkd ntalk xinetd inetutils-inetd \
             avahi-daemon cups isc-dhcp-server slapd nfs-kernel-server bind9 vsftpd apache2 \
             dovecot-core samba squid snmpd rsync exim4-base exim4-daemon-light postfix \
             gcc g++ make; do
      if dpkg -s "$p" >/dev/null 2>&1; then
        apt-get purge -y -qq "$p" >/dev/null
      fi
    done
    apt-get autoremove --purge -y -qq >/dev/null
    # Configuration left behind by removed packages (Lynis PKGS-7346).
    mapfile -t rc < <(dpkg -l | awk '/^rc/ {print $2}')
    if ((${#rc[@]})); then dpkg --purge "${rc[@]}" >/dev/null; fi
    # The test harness keeps its bind-mounted download cache.
    if [[ "${BAKE_HARDEN_KEEP_APT_CACHE:-0}" != 1 ]]; then apt-get clean; fi
  else
    dnf -y -q install audit psacct sysstat libpwquality aide nftables chrony rsyslog
    for p in telnet-server rsh-server ypbind tftp-server xinetd avahi cups dhcp-server openldap-servers \
             nfs-utils-server bind vsftpd httpd dovecot samba squid net-snmp rsync-daemon postfix \
             gcc make; do
      if rpm -q "$p" >/dev/null 2>&1; then dnf -y -q remove "$p"; fi
    done
    dnf clean all
  fi
fi

# ---------------------------------------------------------------- services
log "services"
# systemctl enable/disable/mask work offline (in a chroot or before first boot); a missing unit
# is not an error because the package lists above differ between distributions.
svc() { systemctl "$@" >/dev/null 2>&1 || true; }
for s in auditd acct psacct sysstat nftables apparmor systemd-timesyncd chronyd rsyslog usbguard; do
  svc enable "$s.service"
done
# sshd is not used on instances (Session Manager is the only way in): masked so nothing can
# start it at boot. Masking does not stop the running sshd of the build, which Packer's
# communicator still needs; cleanup.sh removes the package last.
for s in ssh sshd ssh.socket sshd.socket rpcbind rpcbind.socket avahi-daemon cups; do
  svc disable "$s"
  svc mask "$s"
done
# Core dumps could write secrets from the app's memory to disk (CIS 1.5.1).
svc mask systemd-coredump.socket
# /tmp as its own tmpfs with nodev,nosuid,noexec (CIS 1.1.2-1.1.5).
if [[ -f /usr/share/systemd/tmp.mount ]]; then
  cp /usr/share/systemd/tmp.mount /etc/systemd/system/tmp.mount
fi
write /etc/systemd/system/tmp.mount.d/50-bake-options.conf 0644 <<'UNIT'
[Mount]
Options=mode=1777,strictatime,nosuid,nodev,noexec,size=50%%
UNIT
svc enable tmp.mount
# /dev/shm the same way (CIS 1.1.8-1.1.10).
if ! grep -Eq '^[^#].*[[:space:]]/dev/shm[[:space:]]' /etc/fstab 2>/dev/null; then
  printf 'tmpfs\t/dev/shm\ttmpfs\tdefaults,nodev,nosuid,noexec\t0\t0\n' >>/etc/fstab
fi

# ---------------------------------------------------------------- kernel and network
log "sysctl, modules"
write /etc/sysctl.d/60-bake-hardening.conf 0644 <<'CONF'
# CIS 3.2/3.3: this host is not a router and does not trust redirects or source routes.
net.ipv4.ip_forward = 0
net.ipv4.conf.all.send_redirects = 0
net.ipv4.conf.default.send_redirects = 0
net.ipv4.conf.all.accept_source_route = 0
net.ipv4.conf.default.accept_source_route = 0
net.ipv4.conf.all.accept_redirects = 0
net.ipv4.conf.default.accept_redirects = 0
net.ipv4.conf.all.secure_redirects = 0
net.ipv4.conf.default.secure_redirects = 0
net.ipv4.conf.all.log_martians = 1
net.ipv4.conf.default.log_martians = 1
net.ipv4.icmp_echo_ignore_broadcasts = 1
net.ipv4.icmp_ignore_bogus_error_responses = 1
net.ipv4.conf.all.rp_filter = 1
net.ipv4.conf.default.rp_filter = 1
net.ipv4.tcp_syncookies = 1
net.ipv6.conf.all.accept_ra = 0
net.ipv6.conf.default.accept_ra = 0
net.ipv6.conf.all.accept_redirects = 0
net.ipv6.conf.default.accept_redirects = 0
net.ipv6.conf.all.accept_source_route = 0
net.ipv6.conf.default.accept_source_route = 0
net.ipv6.conf.all.forwarding = 0
# CIS 1.5: address space layout randomisation, no core dumps of setuid programs.
kernel.randomize_va_space = 2
fs.suid_dumpable = 0
fs.protected_hardlinks = 1
fs.protected_symlinks = 1
fs.protected_fifos = 2
fs.protected_regular = 2
# Kernel information leaks and attack surface.
kernel.dmesg_restrict = 1
kernel.kptr_restrict = 2
kernel.yama.ptrace_scope = 1
kernel.sysrq = 0
kernel.unprivileged_bpf_disabled = 1
net.core.bpf_jit_harden = 2
dev.tty.ldisc_autoload = 0
kernel.core_uses_pid = 1
CONF
# CIS 1.1.1 and 3.4: file systems and protocols nothing here uses; USB and FireWire storage.
{
  echo "# Not used on a bake instance (CIS 1.1.1, 3.4); 'install … /bin/true' also stops"
  echo "# loading on demand, 'blacklist' stops loading by alias."
  for m in cramfs freevxfs jffs2 hfs hfsplus squashfs udf dccp sctp rds tipc usb-storage \
           firewire-core firewire-ohci firewire-sbp2 bluetooth; do
    printf 'install %s /bin/true\nblacklist %s\n' "$m" "$m"
  done
} | write /etc/modprobe.d/60-bake-hardening.conf 0644

# ---------------------------------------------------------------- core dumps
write /etc/security/limits.d/60-bake-hardening.conf 0644 <<'CONF'
# CIS 1.5.1: no core dumps (they may hold secrets from the app's environment).
*	hard	core	0
*	soft	core	0
CONF
write /etc/systemd/coredump.conf.d/60-bake-hardening.conf 0644 <<'CONF'
[Coredump]
Storage=none
ProcessSizeMax=0
CONF

# ---------------------------------------------------------------- login policy
log "login, PAM, banners"
defs=/etc/login.defs
set_kv "$defs" PASS_MAX_DAYS 365
set_kv "$defs" PASS_MIN_DAYS 1
set_kv "$defs" PASS_WARN_AGE 7
set_kv "$defs" UMASK 027
set_kv "$defs" ENCRYPT_METHOD SHA512
set_kv "$defs" SHA_CRYPT_MIN_ROUNDS 500000
set_kv "$defs" SHA_CRYPT_MAX_ROUNDS 1000000
set_kv "$defs" LOG_OK_LOGINS yes
set_kv "$defs" FAILLOG_ENAB yes
set_kv "$defs" LOGIN_RETRIES 3
set_kv "$defs" LOGIN_TIMEOUT 60
# CIS 5.4.1.4: lock accounts inactive for 30 days after their password expired.
if command -v useradd >/dev/null 2>&1; then useradd -D -f 30 >/dev/null; fi
# Password strength (CIS 5.3.1).
write /etc/security/pwquality.conf.d/60-bake.conf 0644 <<'CONF'
minlen = 14
minclass = 4
retry = 3
enforce_for_root
CONF
# Default umask for shells and an idle timeout (CIS 5.5.4, 5.5.5).
write /etc/profile.d/60-bake-hardening.sh 0644 <<'CONF'
# Set by the bake image hardening.
umask 027
ulimit -c 0
TMOUT=900
readonly TMOUT
export TMOUT
CONF
# Only root may use su (CIS 5.6): pam_wheel with an empty group.
if [[ -f /etc/pam.d/su ]] && ! grep -Eq '^auth[[:space:]]+required[[:space:]]+pam_wheel.so' /etc/pam.d/su; then
  getent group sugroup >/dev/null || groupadd -r sugroup
  sed -i '1a auth       required   pam_wheel.so use_uid group=sugroup' /etc/pam.d/su
fi
# root has no password login; the app runs as its own user.
if command -v passwd >/dev/null 2>&1; then passwd -l root >/dev/null; fi
# Login banners (CIS 1.7): no OS details.
banner='WARNING: this system is restricted to authorized users of its owner.
All access and activity is logged, monitored and recorded, and may be given to law
enforcement as evidence. Unauthorized use is prohibited and subject to criminal and
civil penalties. By continuing you consent to these terms and to the security policy.'
printf '%s\n' "$banner" | write /etc/issue 0644
printf '%s\n' "$banner" | write /etc/issue.net 0644
printf '%s\n' "$banner" | write /etc/motd 0644

# ---------------------------------------------------------------- sshd (if present at all)
if [[ -d /etc/ssh ]]; then
  write /etc/ssh/sshd_config.d/60-bake-hardening.conf 0600 <<'CONF'
# sshd is masked on bake instances (Session Manager is used); if ever started, it is locked down.
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitEmptyPasswords no
X11Forwarding no
AllowTcpForwarding no
AllowAgentForwarding no
MaxAuthTries 3
MaxSessions 2
ClientAliveInterval 300
ClientAliveCountMax 0
LoginGraceTime 60
LogLevel VERBOSE
Banner /etc/issue.net
CONF
fi

# ---------------------------------------------------------------- audit rules
if [[ -d /etc/audit ]]; then
  log "audit rules"
  write /etc/audit/rules.d/60-bake.rules 0640 <<'RULES'
## CIS 4.1.3: changes to identity, time, network, MAC policy, sudoers, logins, permissions,
## mounts, deletions, kernel modules; immutable until reboot (-e 2, last).
-a always,exit -F arch=b64 -S adjtimex,settimeofday,clock_settime -k time-change
-w /etc/localtime -p wa -k time-change
-w /etc/group -p wa -k identity
-w /etc/passwd -p wa -k identity
-w /etc/gshadow -p wa -k identity
-w /etc/shadow -p wa -k identity
-w /etc/security/opasswd -p wa -k identity
-a always,exit -F arch=b64 -S sethostname,setdomainname -k system-locale
-w /etc/issue -p wa -k system-locale
-w /etc/issue.net -p wa -k system-locale
-w /etc/hosts -p wa -k system-locale
-w /etc/apparmor/ -p wa -k MAC-policy
-w /etc/apparmor.d/ -p wa -k MAC-policy
-w /var/log/faillog -p wa -k logins
-w /var/log/lastlog -p wa -k logins
-w /var/run/utmp -p wa -k session
-w /var/log/wtmp -p wa -k logins
-w /var/log/btmp -p wa -k logins
-w /etc/sudoers -p wa -k scope
-w /etc/sudoers.d/ -p wa -k scope
-w /etc/bake/ -p wa -k bake-config
-a always,exit -F arch=b64 -S chmod,fchmod,fchmodat -F auid>=1000 -F auid!=unset -k perm_mod
-a always,exit -F arch=b64 -S chown,fchown,fchownat,lchown -F auid>=1000 -F auid!=unset -k perm_mod
-a always,exit -F arch=b64 -S setxattr,lsetxattr,fsetxattr,removexattr,lremovexattr,fremovexattr -F auid>=1000 -F auid!=unset -k perm_mod
-a always,exit -F arch=b64 -S creat,open,openat,truncate,ftruncate -F exit=-EACCES -F auid>=1000 -F auid!=unset -k access
-a always,exit -F arch=b64 -S creat,open,openat,truncate,ftruncate -F exit=-EPERM -F auid>=1000 -F auid!=unset -k access
-a always,exit -F arch=b64 -S mount -F auid>=1000 -F auid!=unset -k mounts
-a always,exit -F arch=b64 -S unlink,unlinkat,rename,renameat -F auid>=1000 -F auid!=unset -k delete
-a always,exit -F arch=b64 -S init_module,finit_module,delete_module -k modules
-w /usr/sbin/insmod -p x -k modules
-w /usr/sbin/rmmod -p x -k modules
-w /usr/sbin/modprobe -p x -k modules
-e 2
RULES
  if [[ -f /etc/audit/auditd.conf ]]; then
    # Keep audit logs when the disk fills: rotate instead of halting (the agent ships them).
    sed -i -E 's/^max_log_file_action.*/max_log_file_action = keep_logs/' /etc/audit/auditd.conf
  fi
fi

# ---------------------------------------------------------------- USB
if [[ -d /etc/usbguard ]]; then
  # No rules = every USB device is blocked (ImplicitPolicyTarget=block); EC2 has no USB bus.
  : | write /etc/usbguard/rules.conf 0600
  sed -i -E 's/^ImplicitPolicyTarget=.*/ImplicitPolicyTarget=block/; s/^PresentDevicePolicy=.*/PresentDevicePolicy=apply-policy/' \
    /etc/usbguard/usbguard-daemon.conf
fi

# ---------------------------------------------------------------- time, logs
if [[ -d /etc/systemd ]]; then
  write /etc/systemd/timesyncd.conf.d/60-bake.conf 0644 <<'CONF'
[Time]
# The Amazon Time Sync Service, reachable from every VPC on a link-local address.
NTP=169.254.169.123
CONF
  write /etc/systemd/journald.conf.d/60-bake.conf 0644 <<'CONF'
[Journal]
# Persistent, compressed and bounded; long-term copies go to CloudWatch Logs (R9).
Storage=persistent
Compress=yes
SystemMaxUse=500M
ForwardToSyslog=yes
CONF
fi

# ---------------------------------------------------------------- firewall
if [[ -d /etc/nftables.conf.d || -f /etc/nftables.conf || $pkg == apt ]]; then
  write /etc/nftables.conf 0700 <<'NFT'
#!/usr/sbin/nft -f
# Host firewall (CIS 3.5.2): default drop inbound. The security groups are the primary control;
# this is depth. The app's port is not written here: the image serves any AppPort. At every
# start of bake-agent.service, its ExecStartPre `bake-agent firewall` adds the `[app] port` of
# the agent's configuration (fleet.yaml's AppPort, the same value the app gets as PORT) to the
# set app_ports; the security group limits that port to the load balancer. Until then (and
# with no [app] port) no app port is open.
flush ruleset
table inet filter {
  set app_ports {
    type inet_service;
  }
  chain input {
    type filter hook input priority 0; policy drop;
    iif "lo" accept
    iif != "lo" ip saddr 127.0.0.0/8 drop
    iif != "lo" ip6 saddr ::1 drop
    ct state established,related accept
    ct state invalid drop
    ip protocol icmp icmp type { echo-request, destination-unreachable, time-exceeded } accept
    # nft's own keyword, not a name from /etc/protocols (netbase), which an image may lack: an
    # unresolved name fails the whole ruleset, and then nothing is filtered.
    meta l4proto icmpv6 accept
    tcp dport @app_ports accept
  }
  chain forward {
    type filter hook forward priority 0; policy drop;
  }
  chain output {
    type filter hook output priority 0; policy accept;
  }
}
NFT
fi

# ---------------------------------------------------------------- file permissions
log "file permissions"
chmod 0600 /etc/crontab 2>/dev/null || true
for d in /etc/cron.hourly /etc/cron.daily /etc/cron.weekly /etc/cron.monthly /etc/cron.d; do
  [[ -d $d ]] && chmod 0700 "$d"
done
# cron/at restricted to root (CIS 5.1.8-5.1.9).
for f in cron at; do
  rm -f "/etc/$f.deny"
  printf 'root\n' | write "/etc/$f.allow" 0600
done
chmod 0644 /etc/passwd /etc/group
chmod 0640 /etc/shadow /etc/gshadow 2>/dev/null || true
chown root:shadow /etc/shadow /etc/gshadow 2>/dev/null || true
chmod 0600 /etc/passwd- /etc/group- /etc/shadow- /etc/gshadow- 2>/dev/null || true
chmod 0750 /root
chmod 0700 /boot 2>/dev/null || true
for h in /home/*; do [[ -d $h ]] && chmod 0750 "$h"; done
# Compilers are removed above; any left only for root (Lynis HRDN-7222).
for c in /usr/bin/as /usr/bin/cc /usr/bin/gcc /usr/bin/g++; do
  if [[ -e $c ]]; then chmod 0700 "$(readlink -f "$c")"; fi
done
# World-writable files outside /tmp-like dirs get their w bit dropped (CIS 6.1.10).
find / -xdev -type f -perm -0002 -not -path '/proc/*' -not -path '/sys/*' -exec chmod o-w {} + 2>/dev/null || true

# ---------------------------------------------------------------- accounting, file integrity
if [[ -f /etc/default/sysstat ]]; then
  sed -i -E 's/^ENABLED=.*/ENABLED="true"/' /etc/default/sysstat
fi
if [[ -f /etc/aide/aide.conf ]]; then
  # SHA-512 for the file-integrity database instead of the distribution's default group.
  sed -i -E 's/^Checksums[[:space:]]*=.*/Checksums = sha512/' /etc/aide/aide.conf
fi
if command -v aideinit >/dev/null 2>&1 && [[ "${BAKE_HARDEN_AIDE_INIT:-0}" == 1 ]]; then
  # Initialising the AIDE database hashes every file (minutes); done last on the build instance.
  aideinit -y -f >/dev/null
fi

log "done"
