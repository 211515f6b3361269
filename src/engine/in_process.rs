//! The manager as the in-process [`Sessions`]: sessions live in this process and
//! end with it.

use crate::engine::approval::{Approval, Verdict as ApprovalVerdict};
use crate::engine::config::{EngineConfig, SessionOptions};
use crate::engine::error::Result;
use crate::engine::events::SessionEvent;
use crate::engine::manager::Manager;
use crate::engine::response::Response;
use crate::engine::sessions::{Sessions, Where};
use crate::engine::spec::SpawnRequest;
use crate::engine::store::{SessionRecord, Store};
use std::time::Duration;
use tokio::sync::broadcast;

/// Sessions live in this process.
#[async_trait::async_trait]
impl Sessions for Manager {
    fn location(&self) -> Where {
        Where::InProcess
    }

    fn config(&self) -> &EngineConfig {
        Manager::config(self)
    }

    fn store(&self) -> &Store {
        Manager::store(self)
    }

    fn subscribe(&self) -> broadcast::Receiver<SessionEvent> {
        Manager::subscribe(self)
    }

    fn status(&self, name: &str) -> Result<SessionRecord> {
        Manager::status(self, name)
    }

    fn list(&self) -> Result<Vec<SessionRecord>> {
        Manager::list(self)
    }

    fn has_process(&self, name: &str) -> Result<bool> {
        Manager::has_process(self, name)
    }

    async fn spawn(&self, req: SpawnRequest) -> Result<(SessionRecord, Response)> {
        Manager::spawn(self, req).await
    }

    async fn send_as(
        &self,
        name: &str,
        message: &str,
        timeout: Option<Duration>,
        kind: &str,
    ) -> Result<Response> {
        Manager::send_as(self, name, message, timeout, kind).await
    }

    async fn pause(&self, name: &str) -> Result<SessionRecord> {
        Manager::pause(self, name).await
    }

    async fn resume(
        &self,
        name: &str,
        message: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<(SessionRecord, Option<Response>)> {
        Manager::resume(self, name, message, timeout).await
    }

    async fn fork(
        &self,
        name: &str,
        new_name: &str,
        message: Option<&str>,
        overrides: SessionOptions,
        timeout: Option<Duration>,
    ) -> Result<(SessionRecord, Option<Response>)> {
        Manager::fork(self, name, new_name, message, overrides, timeout).await
    }

    async fn approvals(&self) -> Result<Vec<Approval>> {
        Ok(Manager::approvals(self))
    }

    async fn decide(&self, verdict: ApprovalVerdict) -> Result<Approval> {
        Manager::decide(self, verdict).await
    }

    async fn interrupt(&self, name: &str) -> Result<()> {
        Manager::interrupt(self, name).await
    }

    async fn stop(&self, name: &str) -> Result<SessionRecord> {
        Manager::stop(self, name).await
    }

    async fn kill(&self, name: &str) -> Result<SessionRecord> {
        Manager::kill(self, name).await
    }

    async fn delete(&self, name: &str) -> Result<()> {
        Manager::delete(self, name).await
    }

    async fn delete_to_replace(&self, name: &str) -> Result<()> {
        Manager::delete_to_replace(self, name).await
    }

    fn idle(&self, days: f64) -> Result<Vec<SessionRecord>> {
        Manager::idle(self, days)
    }

    fn remove_idle(&self, names: &[String], days: f64) -> Result<Vec<String>> {
        Manager::remove_idle(self, names, days)
    }

    async fn shutdown(&self) {
        Manager::shutdown(self).await
    }

    async fn kill_all(&self) {
        Manager::kill_all(self).await
    }

    async fn interrupt_all(&self) {
        for name in self.live_names() {
            if let Some(s) = self.live(&name) {
                if s.state().is_busy() {
                    let _ = s.interrupt().await;
                }
            }
        }
    }
}
