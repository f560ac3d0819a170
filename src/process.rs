//! Process-wide settings, applied before any thread starts, and this process's name
//! as the ledger records an owner (and whether such an owner still runs).

use chrono::{DateTime, Utc};

/// Keeps glibc's heap from holding on to what a run frees. Other C libraries (musl)
/// have neither tunable: nothing to do there.
///
/// - Two malloc arenas at most. glibc gives each thread that allocates an arena of
///   its own (up to eight per core), and the parser, the store's worker and the
///   runtime's threads each keep what they freed: with the default, a million-row run
///   peaked at 64-78 MiB; with two arenas, 57-60 MiB, no slower.
/// - Blocks of 4 MiB or more (the held hashes, a pass of them, the repeated-email
///   filter) always get pages of their own, given back when freed. glibc raises that
///   threshold to the size of each such block freed, so once the first held hashes
///   were let go the next came from the heap, which kept them after they were freed
///   too: a 5M changed night peaked at 65 MiB, 56 with the threshold fixed, in the
///   same time. Below 4 MiB, a batch of rows is reused from the heap: at 128 KiB each
///   batch was mapped and zeroed anew, and a 1M night took 8% longer.
pub fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const M_MMAP_THRESHOLD: i32 = -3;
        const M_ARENA_MAX: i32 = -8;
        unsafe extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        // SAFETY: `mallopt` only sets an allocator tunable; it is called before the
        // runtime starts any thread. A failure leaves glibc's default in place.
        unsafe {
            mallopt(M_ARENA_MAX, 2);
            mallopt(M_MMAP_THRESHOLD, 4 << 20);
        }
    }
}

/// Lets a command whose output is piped into a reader that stops early (`| head`) end
/// quietly, as other command-line tools do, rather than panic on its next line: Rust
/// ignores SIGPIPE, so the write fails and `println!` panics. Not for the daemon, whose
/// sockets must see a closed peer as an error, not a signal.
pub fn end_quietly_on_closed_pipe() {
    #[cfg(unix)]
    {
        const SIGPIPE: i32 = 13;
        const SIG_DFL: usize = 0;
        unsafe extern "C" {
            fn signal(signum: i32, handler: usize) -> usize;
        }
        // SAFETY: restores the default disposition of one signal, before any thread
        // starts; no handler of ours is involved.
        unsafe {
            signal(SIGPIPE, SIG_DFL);
        }
    }
}

/// This process's name in the store (claims on scheduled times, the owner of a pending
/// action): `host:pid:start`, so that a restart with the same pid is another name.
pub fn instance() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{host}:{}:{started:x}", std::process::id())
}

/// Whether the process that owns a pending row is gone: its lease has passed, or it
/// ran on this host and is no longer running. Owners are `host:pid:start`.
pub fn owner_is_gone(
    owner: &str,
    lease_until: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    this: &str,
) -> bool {
    if lease_until.is_none_or(|until| until < now) {
        return true;
    }
    if owner == this {
        return false;
    }
    let mut parts = owner.rsplitn(3, ':');
    let (_start, pid, host) = (parts.next(), parts.next(), parts.next());
    let this_host = this.rsplitn(3, ':').nth(2);
    if host.is_none() || host != this_host {
        // Another machine's: only its lease tells.
        return false;
    }
    let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok()) else {
        return true;
    };
    // Another start of this very pid (a container's pid 1 restarted) is gone.
    if pid == std::process::id() {
        return true;
    }
    let proc = std::path::Path::new("/proc");
    proc.is_dir() && !proc.join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    #[test]
    fn a_pending_row_is_taken_for_dead_by_its_lease_or_its_gone_process() {
        let now = Utc::now();
        let later = Some(now + TimeDelta::minutes(5));
        let this = format!("host-a:{}:1", std::process::id());
        assert!(owner_is_gone(
            "host-b:1:1",
            Some(now - TimeDelta::seconds(1)),
            now,
            &this
        ));
        assert!(!owner_is_gone("host-b:1:1", later, now, &this));
        assert!(!owner_is_gone(&this, later, now, &this));
        // This pid, another start: an earlier life of this process id.
        assert!(owner_is_gone(
            &format!("host-a:{}:0", std::process::id()),
            later,
            now,
            &this
        ));
        // A pid that cannot be running.
        assert!(owner_is_gone("host-a:4294967290:1", later, now, &this));
    }
}
