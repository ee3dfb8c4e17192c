//! Lowering a background thread's scheduling priority: work that follows
//! the log (derived stores, archive compression) may lag, but must not take
//! the cores from appends when both are busy.

/// Lowers the calling thread's priority to `nice` (0..=19; 0 leaves it as
/// it is). On Linux the nice value is per thread and inherited by the
/// threads it starts afterwards; elsewhere this does nothing.
///
/// # Errors
/// The system refused.
pub fn lower_current_thread(nice: i32) -> std::io::Result<()> {
    if nice == 0 {
        return Ok(());
    }
    #[cfg(target_os = "linux")]
    {
        rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice)
            .map_err(std::io::Error::from)
    }
    #[cfg(not(target_os = "linux"))]
    {
        Ok(())
    }
}

/// Moves the calling thread to the idle scheduling class (Linux
/// `SCHED_IDLE`): it runs only on a core nothing else wants, and any other
/// thread that wakes takes the core from it at once. Inherited by the
/// threads it starts afterwards; elsewhere this does nothing. An
/// unprivileged thread may enter the class but not leave it.
///
/// # Errors
/// The system refused.
pub fn make_current_thread_idle() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let outcome = set_idle_policy();
        // The crate sets the class, then resets the nice value to 0, which
        // an unprivileged thread above nice 0 may not do: the class is
        // what was asked for, so only its absence is a failure (the caller
        // sets the nice value it wants afterwards).
        match outcome {
            Ok(()) => Ok(()),
            Err(_) if current_thread_is_idle() == Some(true) => Ok(()),
            Err(error) => Err(std::io::Error::other(format!("SCHED_IDLE: {error:?}"))),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        Ok(())
    }
}

/// The `thread_priority` crate's own call for `SCHED_IDLE`, whose failure
/// [`make_current_thread_idle`] reads.
#[cfg(target_os = "linux")]
fn set_idle_policy() -> Result<(), thread_priority::Error> {
    use thread_priority::unix::{
        set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
        ThreadSchedulePolicy,
    };
    set_thread_priority_and_policy(
        thread_native_id(),
        thread_priority::ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
    )
}

/// Whether the calling thread is in the idle scheduling class (Linux;
/// `None` elsewhere or when it cannot be read).
#[must_use]
pub fn current_thread_is_idle() -> Option<bool> {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::unix::{
            thread_schedule_policy, NormalThreadSchedulePolicy, ThreadSchedulePolicy,
        };
        thread_schedule_policy()
            .ok()
            .map(|policy| policy == ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle))
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// The calling thread's nice value (Linux; `None` elsewhere or when it
/// cannot be read).
#[must_use]
pub fn current_thread_nice() -> Option<i32> {
    #[cfg(target_os = "linux")]
    {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn a_thread_lowers_only_its_own_priority() {
        let before = current_thread_nice();
        let inside = std::thread::spawn(|| {
            lower_current_thread(5).map(|()| {
                let child = std::thread::spawn(current_thread_nice)
                    .join()
                    .ok()
                    .flatten();
                (current_thread_nice(), child)
            })
        })
        .join()
        .expect("the thread ran");
        assert_eq!(
            inside.ok(),
            Some((Some(5), Some(5))),
            "the thread and its child run at nice 5"
        );
        assert_eq!(
            current_thread_nice(),
            before,
            "the caller keeps its priority"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_thread_enters_the_idle_class_alone_and_its_children_follow() {
        let inside = std::thread::spawn(|| {
            make_current_thread_idle().map(|()| {
                let child = std::thread::spawn(current_thread_is_idle)
                    .join()
                    .ok()
                    .flatten();
                (current_thread_is_idle(), child)
            })
        })
        .join()
        .expect("the thread ran");
        assert_eq!(
            inside.ok(),
            Some((Some(true), Some(true))),
            "the thread and its child are in the idle class"
        );
        assert_eq!(
            current_thread_is_idle(),
            Some(false),
            "the caller keeps its class"
        );
    }

    /// Drops `CAP_SYS_NICE` from the calling thread's effective set (a
    /// root test run has it; capabilities are per thread on Linux), so it
    /// may no longer raise its priority, as an unprivileged thread.
    #[cfg(target_os = "linux")]
    fn give_up_raising_priority() -> std::io::Result<()> {
        let mut sets = rustix::thread::capabilities(None)?;
        sets.effective
            .remove(rustix::thread::CapabilitySet::SYS_NICE);
        rustix::thread::set_capabilities(None, sets)?;
        Ok(())
    }

    /// The crate sets the idle class, then resets the nice value to 0,
    /// which a thread above nice 0 without the right to raise its priority
    /// may not do: the crate reports a failure although the class is set.
    /// `make_current_thread_idle` takes the class as the answer there, so
    /// a derived store's thread lowered first still runs idle.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_lowered_unprivileged_thread_still_enters_the_idle_class() {
        // What the crate alone does there: the reason for the fallback.
        let crate_alone = std::thread::spawn(|| {
            lower_current_thread(5)?;
            give_up_raising_priority()?;
            let outcome = set_idle_policy();
            std::io::Result::Ok((outcome.is_ok(), current_thread_is_idle()))
        })
        .join()
        .expect("the thread ran");
        assert_eq!(
            crate_alone.ok(),
            Some((false, Some(true))),
            "the crate fails after setting the class"
        );
        let ours = std::thread::spawn(|| {
            lower_current_thread(5)?;
            give_up_raising_priority()?;
            make_current_thread_idle()?;
            std::io::Result::Ok((current_thread_is_idle(), current_thread_nice()))
        })
        .join()
        .expect("the thread ran");
        assert_eq!(
            ours.ok(),
            Some((Some(true), Some(5))),
            "idle, and still at the nice value it had"
        );
    }
}
