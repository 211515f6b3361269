//! Time limits and interruption for every Lua state cms builds, coroutines included.
//!
//! mlua's hooks belong to one thread at a time, and a coroutine created by the
//! code being limited escapes them. So cms installs its own instruction hook on
//! the state's main thread when the state is built: Lua 5.4 copies a thread's hook
//! into every thread it creates (`coroutine.create`, `coroutine.wrap`, mlua's own
//! threads), and the main thread's extra space (which names this state's
//! [`Limiter`]) into every new thread. The hook runs every [`EVERY`] instructions
//! and raises `file:line: message` when
//!
//! - the innermost [`with_deadline`] (a callback, a plugin tool slice, a file
//!   being loaded) is past its deadline, or
//! - the state was [`interrupt`]ed (Ctrl-C or SIGTERM of `cms script`).
//!
//! Once it fired, the hook fires on every instruction until the code has unwound,
//! so a `pcall` in a loop cannot swallow the stop.
//!
//! [`reserve`] holds Rust work done for Lua (`cms.shell.parse`, ...) to the
//! state's memory limit as well.

use mlua::ffi;
use mlua::{Function, IntoLuaMulti, Lua};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::os::raw::c_int;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The hook runs every this many VM instructions.
const EVERY: c_int = 1000;

/// Longest a file may take to load (run its top level): a policy script, a
/// plugin's `init.lua`, a strategy.
pub const LOAD_LIMIT: Duration = Duration::from_secs(2);

/// The error of a file stopped at [`LOAD_LIMIT`] (after its `file:line: `).
pub const LOAD_STOPPED: &str =
    "stopped: the file did not finish loading within 2 s (an endless loop at its top level?)";

/// Run `f`, which loads (runs the top level of) a file, under [`LOAD_LIMIT`].
pub fn load_limited<R>(lua: &Lua, f: impl FnOnce() -> mlua::Result<R>) -> mlua::Result<R> {
    with_deadline(lua, LOAD_LIMIT, LOAD_STOPPED, f)
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The limiters of the Lua states living on this thread, by id. Lua states are
    /// not `Send`, so a hook always runs on the thread that owns its limiter.
    static LIMITERS: RefCell<HashMap<u64, Rc<Limiter>>> = RefCell::new(HashMap::new());
}

/// What stops the Lua code of one state.
#[derive(Default)]
struct Limiter {
    /// The deadline in force and what to say when it passes.
    deadline: RefCell<Option<(Instant, String)>>,
    /// Set from any thread (a signal handler's task) to stop all Lua code.
    interrupted: Arc<AtomicBool>,
    /// The deadline in force has passed (even if the code caught the error).
    tripped: Cell<bool>,
}

impl Limiter {
    fn verdict(&self) -> Option<String> {
        if self.interrupted.load(Ordering::Relaxed) {
            return Some("interrupted".into());
        }
        match &*self.deadline.borrow() {
            Some((at, message)) if Instant::now() >= *at => {
                self.tripped.set(true);
                Some(message.clone())
            }
            _ => None,
        }
    }
}

/// Removes the state's limiter when the state goes (kept in its app data).
struct Registration(u64, Rc<Limiter>);

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = LIMITERS.try_with(|m| m.borrow_mut().remove(&self.0));
    }
}

unsafe extern "C-unwind" fn hook(state: *mut ffi::lua_State, ar: *mut ffi::lua_Debug) {
    let id = *(ffi::lua_getextraspace(state) as *const u64);
    let verdict = LIMITERS
        .try_with(|m| m.borrow().get(&id).map(|l| l.verdict()))
        .ok()
        .flatten()
        .flatten();
    match verdict {
        None => {
            if ffi::lua_gethookcount(state) != EVERY {
                ffi::lua_sethook(state, Some(hook), ffi::LUA_MASKCOUNT, EVERY);
            }
        }
        Some(message) => {
            // Every instruction from now on, so the stop cannot be caught for good.
            ffi::lua_sethook(state, Some(hook), ffi::LUA_MASKCOUNT, 1);
            // `file:line: ` of the code that was running.
            let text = if ffi::lua_getinfo(state, c"Sl".as_ptr(), ar) != 0 && (*ar).currentline > 0
            {
                let src = std::ffi::CStr::from_ptr((*ar).short_src.as_ptr()).to_string_lossy();
                format!("{src}:{}: {message}", (*ar).currentline)
            } else {
                message
            };
            ffi::lua_pushlstring(state, text.as_ptr() as *const _, text.len());
            drop(text);
            // Nothing with a destructor is alive in this frame.
            ffi::lua_error(state);
        }
    }
}

/// Install the hook on a fresh state (before it runs any code or creates threads).
pub fn install(lua: &Lua) -> mlua::Result<()> {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let limiter = Rc::new(Limiter::default());
    LIMITERS.with(|m| m.borrow_mut().insert(id, limiter.clone()));
    lua.set_app_data(Registration(id, limiter));
    // SAFETY: plain Lua C API calls on the state mlua hands us, with stack room
    // checked by exec_raw; the main thread is kept alive by the registry.
    unsafe {
        lua.exec_raw::<()>((), |state| {
            ffi::lua_rawgeti(state, ffi::LUA_REGISTRYINDEX, ffi::LUA_RIDX_MAINTHREAD);
            let main = ffi::lua_tothread(state, -1);
            ffi::lua_pop(state, 1);
            for s in [main, state] {
                *(ffi::lua_getextraspace(s) as *mut u64) = id;
                ffi::lua_sethook(s, Some(hook), ffi::LUA_MASKCOUNT, EVERY);
            }
        })
    }
}

fn limiter(lua: &Lua) -> Option<Rc<Limiter>> {
    lua.app_data_ref::<Registration>().map(|r| r.1.clone())
}

/// The flag that stops all Lua code of `lua` when set (from any thread).
pub fn interrupter(lua: &Lua) -> Option<Arc<AtomicBool>> {
    limiter(lua).map(|l| l.interrupted.clone())
}

/// Whether `lua` was interrupted.
pub fn is_interrupted(lua: &Lua) -> bool {
    limiter(lua).is_some_and(|l| l.interrupted.load(Ordering::Relaxed))
}

/// Run `f` with a deadline `limit` from now (or the deadline already in force, if
/// sooner): Lua code still running then, in any coroutine, fails with `message`,
/// and so does `f` even if that code caught the error.
pub fn with_deadline<R>(
    lua: &Lua,
    limit: Duration,
    message: &str,
    f: impl FnOnce() -> mlua::Result<R>,
) -> mlua::Result<R> {
    with_deadline_at(lua, Instant::now() + limit, message, f)
}

fn with_deadline_at<R>(
    lua: &Lua,
    at: Instant,
    message: &str,
    f: impl FnOnce() -> mlua::Result<R>,
) -> mlua::Result<R> {
    let Some(l) = limiter(lua) else {
        return f();
    };
    let previous = l.deadline.borrow().clone();
    let sooner = previous.as_ref().is_some_and(|(p, _)| *p <= at);
    if !sooner {
        *l.deadline.borrow_mut() = Some((at, message.to_string()));
    }
    /// Puts the previous deadline back, also when `f` unwinds.
    struct Restore(Rc<Limiter>, Option<(Instant, String)>, bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            *self.0.deadline.borrow_mut() = self.1.take();
            self.0.tripped.set(self.2);
        }
    }
    let restore = Restore(l.clone(), previous, l.tripped.replace(false));
    let r = f();
    let tripped = l.tripped.get();
    drop(restore);
    match r {
        Ok(_) if tripped => Err(mlua::Error::runtime(message)),
        r => r,
    }
}

/// A future whose Lua code runs under a deadline: each poll (each slice of Lua
/// between two waits) is limited, so a job that spins is stopped while jobs
/// interleaved with it keep their own deadlines.
pub struct Limited<F> {
    lua: Lua,
    at: Instant,
    /// Each poll gets this long from its start (instead of one deadline `at`).
    slice: Option<Duration>,
    message: String,
    inner: Pin<Box<F>>,
}

/// Limit `fut`, a future that runs Lua code of `lua`, to `limit` from now.
pub fn limited<T, F: Future<Output = mlua::Result<T>>>(
    lua: &Lua,
    limit: Duration,
    message: String,
    fut: F,
) -> Limited<F> {
    Limited {
        lua: lua.clone(),
        at: Instant::now() + limit,
        slice: None,
        message,
        inner: Box::pin(fut),
    }
}

/// Limit each slice of `fut` (each poll: the Lua code between two waits) to
/// `slice`, however long the whole may take.
pub fn sliced<T, F: Future<Output = mlua::Result<T>>>(
    lua: &Lua,
    slice: Duration,
    message: String,
    fut: F,
) -> Limited<F> {
    Limited {
        slice: Some(slice),
        ..limited(lua, slice, message, fut)
    }
}

impl<T, F: Future<Output = mlua::Result<T>>> Future for Limited<F> {
    type Output = mlua::Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<mlua::Result<T>> {
        let this = self.get_mut();
        let at = this.slice.map_or(this.at, |s| Instant::now() + s);
        let (lua, message, inner) = (&this.lua, &this.message, &mut this.inner);
        let r = with_deadline_at(lua, at, message, || match inner.as_mut().poll(cx) {
            Poll::Ready(r) => r.map(Poll::Ready),
            Poll::Pending => Ok(Poll::Pending),
        });
        match r {
            Ok(p) => p.map(Ok),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

/// How many bytes more fit within the state's memory limit (None: no limit).
pub fn headroom(lua: &Lua) -> Option<usize> {
    // mlua has no getter for the limit: read it by setting it back at once.
    let limit = lua.set_memory_limit(0).ok()?;
    let _ = lua.set_memory_limit(limit);
    (limit != 0).then(|| limit.saturating_sub(lua.used_memory()))
}

fn out_of_memory(bytes: usize) -> mlua::Error {
    mlua::Error::MemoryError(format!(
        "not enough memory: this call needs {} KB or more, over what the memory limit leaves",
        bytes.div_ceil(1024)
    ))
}

/// Fail with Lua's "not enough memory" unless `bytes` more fit within the state's
/// memory limit: Rust functions called from Lua check what they are about to
/// allocate on the Lua state's behalf.
pub fn reserve(lua: &Lua, bytes: usize) -> mlua::Result<()> {
    match headroom(lua) {
        Some(room) if bytes > room => Err(out_of_memory(bytes)),
        _ => Ok(()),
    }
}

/// A buffer that refuses to grow past the state's memory headroom (for output
/// whose size is only known while it is written, like JSON of shared tables).
pub struct Bounded {
    pub bytes: Vec<u8>,
    room: usize,
}

impl Bounded {
    pub fn new(lua: &Lua) -> Bounded {
        Bounded {
            bytes: Vec::new(),
            room: headroom(lua).unwrap_or(usize::MAX),
        }
    }

    /// The error to give when a write failed for want of room.
    pub fn overflowed(&self) -> Option<mlua::Error> {
        (self.bytes.len() >= self.room).then(|| out_of_memory(self.bytes.len()))
    }
}

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len().saturating_add(buf.len()) > self.room {
            self.bytes.truncate(self.room);
            self.bytes.shrink_to_fit();
            self.room = self.bytes.len();
            return Err(std::io::Error::other("over the memory limit"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Run `f` in its own coroutine under a deadline of `limit`: Lua code still
/// running then (in any coroutine it made) is stopped with a clear error.
pub fn call_limited<R: mlua::FromLuaMulti>(
    lua: &Lua,
    limit: Duration,
    f: &Function,
    args: impl IntoLuaMulti,
) -> mlua::Result<R> {
    let thread = lua.create_thread(f.clone())?;
    let message = format!(
        "callback stopped: it ran longer than its limit of {} ms (an endless loop?)",
        limit.as_millis()
    );
    let r = with_deadline(lua, limit, &message, || thread.resume::<R>(args))?;
    if thread.status() == mlua::ThreadStatus::Resumable {
        return Err(mlua::Error::runtime(
            "callbacks cannot wait: async calls (s:send, cms.sleep, ...) are not allowed here",
        ));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> Lua {
        let lua = Lua::new();
        install(&lua).unwrap();
        lua
    }

    fn run(lua: &Lua, code: &str) -> mlua::Result<()> {
        with_deadline(lua, Duration::from_millis(200), "stopped: too long", || {
            lua.load(code).set_name("=t").exec()
        })
    }

    #[test]
    fn a_loop_is_stopped_with_its_position() {
        let e = run(&state(), "local x = 0\nwhile true do x = x + 1 end").unwrap_err();
        assert!(e.to_string().contains("t:2: stopped: too long"), "{e}");
    }

    #[test]
    fn coroutines_do_not_escape() {
        let lua = state();
        for code in [
            "coroutine.wrap(function() while true do end end)()",
            "local co = coroutine.create(function() while true do end end) assert(coroutine.resume(co))",
            "coroutine.wrap(function() coroutine.wrap(function() while true do end end)() end)()",
        ] {
            let e = run(&lua, code).unwrap_err();
            assert!(e.to_string().contains("stopped: too long"), "{code}: {e}");
        }
        // A coroutine made before the limit applied is covered too.
        lua.load("co = coroutine.create(function() while true do end end)")
            .exec()
            .unwrap();
        assert!(run(&lua, "assert(coroutine.resume(co))").is_err());
    }

    #[test]
    fn pcall_cannot_swallow_the_stop() {
        let e = run(
            &state(),
            "while true do pcall(function() while true do end end) end",
        )
        .unwrap_err();
        assert!(e.to_string().contains("stopped: too long"), "{e}");
    }

    #[test]
    fn a_stop_caught_inside_still_fails_the_call() {
        let e = run(
            &state(),
            "pcall(coroutine.wrap(function() while true do end end)) return 1",
        )
        .unwrap_err();
        assert!(e.to_string().contains("stopped: too long"), "{e}");
    }

    #[test]
    fn code_after_a_stop_runs_normally() {
        let lua = state();
        assert!(run(&lua, "while true do end").is_err());
        let n: i64 = lua
            .load("local n = 0 for i = 1, 100000 do n = n + 1 end return n")
            .eval()
            .unwrap();
        assert_eq!(n, 100000);
    }

    #[test]
    fn an_interrupt_stops_unlimited_code() {
        let lua = state();
        let flag = interrupter(&lua).unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            flag.store(true, Ordering::Relaxed);
        });
        let e = lua.load("while true do end").exec().unwrap_err();
        t.join().unwrap();
        assert!(e.to_string().contains("interrupted"), "{e}");
        assert!(is_interrupted(&lua));
    }
}
