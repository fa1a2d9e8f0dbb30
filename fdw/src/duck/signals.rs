//! Postgres delivers SIGINT, SIGALRM, SIGUSR1, ... to the backend process and expects
//! its own handlers to run on the backend's thread. A thread inherits the signal mask
//! of the thread that creates it, so every thread DuckDB (or this extension) starts is
//! started while all signals are blocked.

pub struct SignalsBlocked {
    previous: libc::sigset_t,
}

impl SignalsBlocked {
    pub fn new() -> Self {
        // SAFETY: sigfillset/pthread_sigmask only write the sets we pass.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut previous: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut previous);
            SignalsBlocked { previous }
        }
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved in `new`.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.previous, std::ptr::null_mut());
        }
    }
}
