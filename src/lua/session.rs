//! The session object of the Lua API: `s.name`, `s.id`, `s.state`, `s.response`,
//! and `s:send`, `s:pause`, `s:resume`, `s:stop`, `s:kill`, `s:interrupt`, `s:fork`,
//! `s:history`, `s:status`, `s:delete`.

use crate::engine::{Response, SessionOptions, Sessions};
use crate::lua::convert::{self, ForkOpts, SendOpts};
use crate::lua::events::{dispatch_events, touch, while_dispatching, HostShared};
use mlua::{Lua, UserData, UserDataFields, UserDataMethods, UserDataRef, Value};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

pub struct SessionHandle {
    pub name: String,
    pub manager: Arc<dyn Sessions>,
    pub shared: Rc<HostShared>,
    /// The response of this handle's last call.
    pub last: RefCell<Option<Response>>,
}

impl SessionHandle {
    pub fn new(
        name: String,
        manager: Arc<dyn Sessions>,
        shared: Rc<HostShared>,
        last: Option<Response>,
    ) -> Self {
        shared.touched.borrow_mut().insert(name.clone());
        SessionHandle {
            name,
            manager,
            shared,
            last: RefCell::new(last),
        }
    }

    fn keep(&self, r: &Response) {
        *self.last.borrow_mut() = Some(r.clone());
    }

    /// After an engine call: run the event handlers for what happened meanwhile.
    fn events(&self, lua: &Lua) {
        dispatch_events(lua, &self.shared);
    }
}

/// An engine error as a Lua error, with what to do about it in Lua.
pub fn engine_err(e: crate::engine::EngineError) -> mlua::Error {
    use crate::engine::Remedy;
    let how = match e.remedy() {
        None => return mlua::Error::runtime(e.to_string()),
        Some(Remedy::ListSessions) => "cms.list() shows the sessions there are".to_string(),
        Some(Remedy::DeleteOrRename(n)) => {
            format!("pick another name, or cms.get(\"{n}\"):delete() first")
        }
        Some(Remedy::Resume(_)) => "resume it first: s:resume()".to_string(),
        Some(Remedy::SendWhereHeld(n)) => format!(
            "send to it from there, or wait until that process ends it (cms.get(\"{n}\"):status() shows who holds it)"
        ),
        Some(Remedy::TryAgainLater(_)) => "try again when it is done".to_string(),
        Some(Remedy::ShowStatus(n)) => format!("cms.get(\"{n}\"):status() shows its state"),
        Some(Remedy::UseHost(_)) => {
            "run the script without --no-host (and CMS_NO_HOST unset) to reach it there".to_string()
        }
        Some(Remedy::InstallClaude) => "install Claude Code (`npm install -g @anthropic-ai/claude-code`), \
             or run the script with --claude-bin (or CMS_CLAUDE_BIN) pointing at it"
            .to_string(),
    };
    mlua::Error::runtime(format!("{e}; {how}"))
}

impl UserData for SessionHandle {
    fn add_fields<F: UserDataFields<Self>>(fields: &mut F) {
        fields.add_field_method_get("name", |_, s| Ok(s.name.clone()));
        fields.add_field_method_get("id", |_, s| {
            Ok(s.manager
                .status(&s.name)
                .ok()
                .and_then(|r| r.claude_session_id))
        });
        fields.add_field_method_get("state", |_, s| {
            Ok(s.manager
                .status(&s.name)
                .map(|r| r.state.as_str())
                .unwrap_or("deleted"))
        });
        fields.add_field_method_get("response", |lua, s| match &*s.last.borrow() {
            Some(r) => convert::response(lua, r),
            None => Ok(Value::Nil),
        });
    }

    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_meta_method(mlua::MetaMethod::ToString, |_, s, ()| {
            Ok(format!("session<{}>", s.name))
        });

        methods.add_async_method(
            "send",
            |lua, s: UserDataRef<SessionHandle>, (text, opts): (String, Option<Value>)| async move {
                let opts: SendOpts = match opts {
                    Some(v) => convert::opts(&lua, "send", v)?,
                    None => SendOpts::default(),
                };
                let timeout = convert::seconds(opts.timeout)?;
                let r = while_dispatching(&lua, &s.shared, s.manager.send(&s.name, &text, timeout))
                    .await;
                s.events(&lua);
                let r = r.map_err(engine_err)?;
                s.keep(&r);
                convert::response(&lua, &r)
            },
        );

        methods.add_async_method("pause", |_, s: UserDataRef<SessionHandle>, ()| async move {
            s.manager.pause(&s.name).await.map_err(engine_err)?;
            Ok(())
        });

        methods.add_async_method(
            "resume",
            |lua, s: UserDataRef<SessionHandle>, message: Option<String>| async move {
                let result = while_dispatching(
                    &lua,
                    &s.shared,
                    s.manager.resume(&s.name, message.as_deref(), None),
                )
                .await;
                s.events(&lua);
                let (_, r) = result.map_err(engine_err)?;
                match r {
                    Some(r) => {
                        s.keep(&r);
                        convert::response(&lua, &r)
                    }
                    None => Ok(Value::Nil),
                }
            },
        );

        methods.add_async_method("stop", |_, s: UserDataRef<SessionHandle>, ()| async move {
            s.manager.stop(&s.name).await.map_err(engine_err)?;
            Ok(())
        });

        methods.add_async_method("kill", |_, s: UserDataRef<SessionHandle>, ()| async move {
            s.manager.kill(&s.name).await.map_err(engine_err)?;
            Ok(())
        });

        methods.add_async_method(
            "interrupt",
            |_, s: UserDataRef<SessionHandle>, ()| async move {
                s.manager.interrupt(&s.name).await.map_err(engine_err)
            },
        );

        methods.add_async_method(
            "delete",
            |_, s: UserDataRef<SessionHandle>, ()| async move {
                s.manager.delete(&s.name).await.map_err(engine_err)
            },
        );

        methods.add_async_method(
            "fork",
            |lua, s: UserDataRef<SessionHandle>, opts: Value| async move {
                let opts: ForkOpts = convert::opts(&lua, "fork", opts)?;
                let overrides = SessionOptions {
                    model: opts.model,
                    system_prompt: opts.system_prompt,
                    ..SessionOptions::default()
                };
                let timeout = convert::seconds(opts.timeout)?;
                touch(&s.shared, &opts.name);
                let result = while_dispatching(
                    &lua,
                    &s.shared,
                    s.manager.fork(
                        &s.name,
                        &opts.name,
                        opts.message.as_deref(),
                        overrides,
                        timeout,
                    ),
                )
                .await;
                s.events(&lua);
                let (_, r) = result.map_err(engine_err)?;
                crate::lua::events::started(&s.shared, &opts.name, opts.keep);
                lua.create_userdata(SessionHandle::new(
                    opts.name,
                    s.manager.clone(),
                    s.shared.clone(),
                    r,
                ))
            },
        );

        methods.add_method("history", |lua, s, ()| {
            let items = s.manager.history(&s.name).map_err(engine_err)?;
            convert::history(lua, &items)
        });

        methods.add_method("status", |lua, s, ()| {
            let rec = s.manager.status(&s.name).map_err(engine_err)?;
            convert::status(lua, &rec)
        });
    }
}

/// Make a session object for Lua.
pub fn handle(
    lua: &Lua,
    name: String,
    manager: Arc<dyn Sessions>,
    shared: Rc<HostShared>,
    last: Option<Response>,
) -> mlua::Result<Value> {
    Ok(Value::UserData(lua.create_userdata(SessionHandle::new(
        name, manager, shared, last,
    ))?))
}
