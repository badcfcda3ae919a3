//! Cost of starting a process: the agent's clone(CLONE_VM|CLONE_VFORK) plan against
//! std::process::Command with a pre_exec hook (fork). Prints medians in microseconds.
//!
//!     cargo run --release -p bake-agent --example spawn_cost [N]
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::Instant;

use bake_agent::supervisor::process::environment;
use bake_agent::supervisor::spawn::Plan;

fn median(mut v: Vec<u128>) -> u128 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    // Some heap, as a running agent has.
    let ballast: Vec<Vec<u8>> = (0..64u8).map(|i| vec![i; 64 * 1024]).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cmd = vec!["/bin/true".to_owned()];
        let mut plan =
            Plan::new(&cmd, environment(None, [("A", "b")]), Path::new("/"), None).unwrap();
        let (mut spawn_us, mut total_us) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let t = Instant::now();
            let mut c = plan.spawn().unwrap();
            spawn_us.push(t.elapsed().as_micros());
            c.wait().await.unwrap();
            total_us.push(t.elapsed().as_micros());
        }
        println!(
            "clone(VM|VFORK): spawn p50 {} us, spawn+exit {} us",
            median(spawn_us),
            median(total_us)
        );
        let (mut spawn_us, mut total_us) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let t = Instant::now();
            let mut c = std::process::Command::new("/bin/true");
            c.env_clear()
                .env("A", "b")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            // SAFETY: setsid is async-signal-safe.
            unsafe {
                c.pre_exec(|| {
                    nix::unistd::setsid()?;
                    Ok(())
                });
            }
            let mut c = tokio::process::Command::from(c).spawn().unwrap();
            spawn_us.push(t.elapsed().as_micros());
            c.wait().await.unwrap();
            total_us.push(t.elapsed().as_micros());
        }
        println!(
            "std fork+pre_exec: spawn p50 {} us, spawn+exit {} us",
            median(spawn_us),
            median(total_us)
        );
    });
    drop(ballast);
}
