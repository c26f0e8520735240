//! The registry: agents with passports, resumes, rules and skills; unique names; endpoint
//! bindings. Audit: `agent_registered`, `agent_unregistered`, `resume_set`, `rule_set`,
//! `skill_set`.

use super::rule::Rule;
use super::tasks::TaskState;
use super::{AgentEntry, Hub};
use crate::ids::{is_hex32, AgentId, EndpointId};
use crate::json::py_str_repr;
use crate::proto::HubError;
use crate::time::{Now, Timestamp};
use indexmap::IndexMap;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The identity part of a registration (ag2's `Passport`).
#[derive(Clone, Debug, PartialEq)]
pub struct Passport {
    /// Unique per hub; may not have the shape of an agent id.
    pub name: String,
    /// `None` means `agent`; also `human` or `remote_agent`.
    pub kind: Option<String>,
    /// `auth.scheme` (the claim itself is never kept).
    pub auth_scheme: String,
    /// Stamped on registration.
    pub agent_id: Option<AgentId>,
    /// Stamped on registration.
    pub created_at: Option<Timestamp>,
    /// The fields ag2 stores and echoes but never reads.
    pub details: PassportDetails,
}

/// The passport fields the hub carries without interpreting them, as the JSON values the client
/// sent (ag2 does not type-check them either). Defaults are ag2's.
#[derive(Clone, Debug, PartialEq)]
pub struct PassportDetails {
    /// `owner` (default `""`).
    pub owner: Value,
    /// `provider`.
    pub provider: Value,
    /// `model`.
    pub model: Value,
    /// `cost`: `null` or a full `CostProfile` object.
    pub cost: Value,
    /// `region`.
    pub region: Value,
    /// `auth.issuer`.
    pub issuer: Value,
    /// `auth.audience`.
    pub audience: Value,
    /// `auth.key_fingerprint`.
    pub key_fingerprint: Value,
    /// `hub_id`.
    pub hub_id: Value,
    /// `version` (default 1).
    pub version: Value,
}

impl Default for PassportDetails {
    fn default() -> PassportDetails {
        PassportDetails {
            owner: Value::from(""),
            provider: Value::Null,
            model: Value::Null,
            cost: Value::Null,
            region: Value::Null,
            issuer: Value::Null,
            audience: Value::Null,
            key_fingerprint: Value::Null,
            hub_id: Value::Null,
            version: Value::from(1),
        }
    }
}

impl Passport {
    /// A plain agent passport with `name`.
    pub fn named(name: &str) -> Passport {
        Passport {
            name: name.to_string(),
            kind: None,
            auth_scheme: "none".to_string(),
            agent_id: None,
            created_at: None,
            details: PassportDetails::default(),
        }
    }
}

/// Observed outcomes of one capability (ag2's `ObservedStat`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedStat {
    /// Terminal tasks seen (cancelled ones count here only).
    pub n: u64,
    /// Completed.
    pub completed: u64,
    /// Failed.
    pub failed: u64,
    /// Expired.
    pub expired: u64,
    /// The latest latency reported.
    pub p50_latency_ms: Option<u64>,
}

/// What an agent claims and what the hub observed (ag2's `Resume`).
#[derive(Clone, Debug, PartialEq)]
pub struct Resume {
    /// Claimed capabilities.
    pub claimed_capabilities: Vec<String>,
    /// `domains`, carried as sent (never read by the hub).
    pub domains: Value,
    /// Free text, searched by `list_agents(query=...)`.
    pub summary: String,
    /// `examples`: full `ResumeExample` objects (or whatever non-object items were sent).
    pub examples: Vec<Value>,
    /// Observed outcomes per capability, in the order they were first recorded (a Python dict).
    pub observed: IndexMap<String, ObservedStat>,
    /// Bumped on every change.
    pub version: i64,
    /// Stamped on `set_resume` and `record_observation`.
    pub last_updated: Option<Timestamp>,
}

impl Default for Resume {
    /// ag2's `Resume()`: empty, version 1.
    fn default() -> Resume {
        Resume {
            claimed_capabilities: Vec::new(),
            domains: Value::Array(Vec::new()),
            summary: String::new(),
            examples: Vec::new(),
            observed: IndexMap::new(),
            version: 1,
            last_updated: None,
        }
    }
}

impl Hub {
    /// ag2's `register_identity` (scheme `none`): mints the agent id, stamps the passport, stores
    /// the rule (default `Rule()`), audits `agent_registered`.
    ///
    /// # Errors
    /// `ProtocolError` for a name shaped like an agent id or already registered.
    pub fn register(
        &mut self,
        now: Now,
        mut passport: Passport,
        resume: Resume,
        rule: Option<Rule>,
    ) -> Result<AgentId, HubError> {
        self.register_with_claim(now, &mut passport, &serde_json::Map::new(), resume, rule)
    }

    /// ag2's `register_identity` with an auth claim: the claim is validated by the passport's
    /// scheme adapter (before the name checks, as in ag2) and then dropped.
    ///
    /// # Errors
    /// `AuthError` for an unknown scheme or a bad claim, then as [`Hub::register`].
    pub fn register_with_claim(
        &mut self,
        now: Now,
        passport: &mut Passport,
        claim: &serde_json::Map<String, serde_json::Value>,
        resume: Resume,
        rule: Option<Rule>,
    ) -> Result<AgentId, HubError> {
        self.config
            .auth
            .validate(&passport.auth_scheme, &passport.name, claim)?;
        let name = passport.name.clone();
        let id_shaped = is_hex32(&name)
            || AgentId::parse(&name).is_some_and(|id| self.agents.contains_key(&id));
        if id_shaped {
            return Err(HubError::protocol(format!(
                "name {} is, or has the shape of, an agent id",
                py_str_repr(&name)
            )));
        }
        if let Some(existing) = self.names.get(&name) {
            return Err(HubError::protocol(format!(
                "name {} already registered (agent_id={existing}); unregister it before re-registering.",
                py_str_repr(&name)
            )));
        }
        let agent = AgentId(self.ids.next_raw());
        passport.agent_id = Some(agent);
        passport.created_at = Some(now.wall);
        self.agents.insert(
            agent,
            AgentEntry {
                passport: Arc::new(passport.clone()),
                resume,
                rule: rule.unwrap_or_default(),
                skill: None,
            },
        );
        self.names.insert(name.clone(), agent);
        self.audit.agent(now.wall, true, agent, &name);
        Ok(agent)
    }

    /// ag2's `unregister`: drops the identity, its name, binding and inbox counter. Channels and
    /// tasks keep the id.
    ///
    /// # Errors
    /// `NotFoundError("agent not registered: <id>")`.
    pub fn unregister(&mut self, now: Now, agent: AgentId) -> Result<(), HubError> {
        let entry = self
            .agents
            .remove(&agent)
            .ok_or_else(|| HubError::not_found(format!("agent not registered: {agent}")))?;
        if self.names.get(&entry.passport.name) == Some(&agent) {
            self.names.remove(&entry.passport.name);
        }
        self.bindings.remove(&agent);
        self.inbox_pending.remove(&agent);
        self.cursors.remove(&agent);
        self.audit
            .agent(now.wall, false, agent, &entry.passport.name);
        Ok(())
    }

    /// The connection `agent` is bound to.
    pub fn endpoint_of(&self, agent: AgentId) -> Option<EndpointId> {
        self.bindings.get(&agent).copied()
    }

    /// ag2's `get_agent`: an exact id wins over a name.
    ///
    /// # Errors
    /// `NotFoundError("agent not found: <name_or_id>")`.
    pub fn get_agent(&self, name_or_id: &str) -> Result<(AgentId, &Passport), HubError> {
        let by_id = AgentId::parse(name_or_id).filter(|id| self.agents.contains_key(id));
        let id = by_id.or_else(|| self.names.get(name_or_id).copied());
        id.and_then(|id| self.agents.get(&id).map(|entry| (id, &*entry.passport)))
            .ok_or_else(|| HubError::not_found(format!("agent not found: {name_or_id}")))
    }

    /// ag2's `get_resume`.
    ///
    /// # Errors
    /// `NotFoundError("resume not found: <agent_id>")`.
    pub fn get_resume(&self, agent_id: &str) -> Result<&Resume, HubError> {
        AgentId::parse(agent_id)
            .and_then(|id| self.resume_of(id))
            .ok_or_else(|| HubError::not_found(format!("resume not found: {agent_id}")))
    }

    /// ag2's `get_rule`.
    ///
    /// # Errors
    /// `NotFoundError("rule not found: <agent_id>")`.
    pub fn get_rule(&self, agent_id: &str) -> Result<&Rule, HubError> {
        AgentId::parse(agent_id)
            .and_then(|id| self.rule_of(id))
            .ok_or_else(|| HubError::not_found(format!("rule not found: {agent_id}")))
    }

    /// ag2's `name_for`: the registered name, or the id itself when unknown.
    pub fn name_for<'a>(&'a self, agent_id: &'a str) -> &'a str {
        AgentId::parse(agent_id)
            .and_then(|id| self.name_of(id))
            .unwrap_or(agent_id)
    }

    /// Stores a SKILL.md at registration: ag2's `register_identity` persists it without the
    /// `skill_set` audit record that `set_skill` writes.
    pub(crate) fn store_skill(&mut self, agent: AgentId, skill: String) {
        if let Some(entry) = self.agents.get_mut(&agent) {
            entry.skill = Some(skill);
        }
    }

    /// ag2's `find_agent_id`: the id registered under `name`, if any.
    pub fn find_agent_id(&self, name: &str) -> Option<AgentId> {
        self.names.get(name).copied()
    }

    /// The registered name of `agent`, if registered.
    pub fn name_of(&self, agent: AgentId) -> Option<&str> {
        self.agents
            .get(&agent)
            .map(|entry| entry.passport.name.as_str())
    }

    /// ag2's `name_to_id_map()`.
    pub fn name_to_id(&self) -> &BTreeMap<String, AgentId> {
        &self.names
    }

    /// True while `agent` is registered.
    pub fn is_registered(&self, agent: AgentId) -> bool {
        self.agents.contains_key(&agent)
    }

    /// The rule of a registered agent.
    pub fn rule_of(&self, agent: AgentId) -> Option<&Rule> {
        self.agents.get(&agent).map(|entry| &entry.rule)
    }

    /// The resume of a registered agent.
    pub fn resume_of(&self, agent: AgentId) -> Option<&Resume> {
        self.agents.get(&agent).map(|entry| &entry.resume)
    }

    /// The skill document of a registered agent.
    pub fn skill_of(&self, agent: AgentId) -> Option<&str> {
        self.agents
            .get(&agent)
            .and_then(|entry| entry.skill.as_deref())
    }

    fn entry_mut(&mut self, agent: AgentId) -> Result<&mut AgentEntry, HubError> {
        self.agents
            .get_mut(&agent)
            .ok_or_else(|| HubError::not_found(format!("agent not registered: {agent}")))
    }

    /// ag2's `set_rule`: the version becomes the previous version plus one; audit `rule_set`.
    ///
    /// # Errors
    /// `NotFoundError("agent not registered: <id>")`.
    pub fn set_rule(&mut self, now: Now, agent: AgentId, mut rule: Rule) -> Result<(), HubError> {
        let entry = self.entry_mut(agent)?;
        rule.version = entry.rule.version + 1;
        let version = rule.version;
        entry.rule = rule;
        self.audit.rule_set(now.wall, agent, version);
        Ok(())
    }

    /// ag2's `set_resume`: stamps `last_updated`, bumps the version; audit `resume_set`.
    ///
    /// # Errors
    /// `NotFoundError("agent not registered: <id>")`.
    pub fn set_resume(
        &mut self,
        now: Now,
        agent: AgentId,
        mut resume: Resume,
    ) -> Result<(), HubError> {
        let entry = self.entry_mut(agent)?;
        resume.last_updated = Some(now.wall);
        resume.version = entry.resume.version + 1;
        let version = resume.version;
        entry.resume = resume;
        self.audit.resume_set(now.wall, agent, version);
        Ok(())
    }

    /// ag2's `set_skill`; `None` removes it. Audit `skill_set`.
    ///
    /// # Errors
    /// `NotFoundError("agent not registered: <id>")`.
    pub fn set_skill(
        &mut self,
        now: Now,
        agent: AgentId,
        skill: Option<String>,
    ) -> Result<(), HubError> {
        let entry = self.entry_mut(agent)?;
        let removed = skill.is_none();
        entry.skill = skill;
        self.audit.skill_set(now.wall, agent, removed);
        Ok(())
    }

    /// ag2's `record_observation`: counts a terminal task outcome under `capability` in the
    /// owner's resume (once per task); audit `resume_set` with source `observed`. Non-terminal
    /// outcomes, unknown owners and repeats are ignored. `cancelled` counts in `n` only.
    pub fn record_observation(
        &mut self,
        now: Now,
        owner: AgentId,
        capability: &str,
        outcome: TaskState,
        latency_ms: Option<u64>,
        task_id: Option<&str>,
    ) {
        if !outcome.is_terminal() {
            return;
        }
        if let Some(task) = task_id {
            if self.tasks.observed.contains(&(owner, task.to_string())) {
                return;
            }
        }
        let Some(entry) = self.agents.get_mut(&owner) else {
            return;
        };
        let stat = entry
            .resume
            .observed
            .entry(capability.to_string())
            .or_default();
        stat.n += 1;
        match outcome {
            TaskState::Completed => stat.completed += 1,
            TaskState::Failed => stat.failed += 1,
            TaskState::Expired => stat.expired += 1,
            _ => {}
        }
        if latency_ms.is_some() {
            stat.p50_latency_ms = latency_ms;
        }
        entry.resume.last_updated = Some(now.wall);
        entry.resume.version += 1;
        let version = entry.resume.version;
        if let Some(task) = task_id {
            self.tasks.observed.insert((owner, task.to_string()));
        }
        self.audit
            .observation(now.wall, owner, version, capability, outcome.as_str());
    }

    /// ag2's `list_agents` before its sort and limit: registration order, filtered by `kind`
    /// (`None` passports count as `agent`), capability (claimed or observed) and a
    /// case-insensitive summary substring (an empty query matches every summary, as ag2 skips it).
    pub fn matching_agents(
        &self,
        capability: Option<&str>,
        query: Option<&str>,
        kind: Option<&str>,
    ) -> Vec<AgentId> {
        self.matching_entries(capability, query, kind)
            .map(|(id, _)| id)
            .collect()
    }

    /// [`Hub::matching_agents`] with each agent's entry.
    pub(crate) fn matching_entries<'a>(
        &'a self,
        capability: Option<&'a str>,
        query: Option<&str>,
        kind: Option<&'a str>,
    ) -> impl Iterator<Item = (AgentId, &'a AgentEntry)> + 'a {
        let query = query.map(str::to_lowercase);
        self.agents
            .iter()
            .filter(move |(_, entry)| {
                kind.is_none_or(|kind| entry.passport.kind.as_deref().unwrap_or("agent") == kind)
            })
            .filter(move |(_, entry)| {
                capability.is_none_or(|cap| {
                    entry.resume.claimed_capabilities.iter().any(|c| c == cap)
                        || entry.resume.observed.contains_key(cap)
                })
            })
            .filter(move |(_, entry)| {
                query
                    .as_ref()
                    .is_none_or(|q| entry.resume.summary.to_lowercase().contains(q.as_str()))
            })
            .map(|(id, entry)| (*id, entry))
    }

    /// ag2's `list_agents`: registration order, optionally filtered by capability (claimed or
    /// observed) and a case-insensitive summary substring, at most `limit`.
    pub fn list_agents(
        &self,
        capability: Option<&str>,
        query: Option<&str>,
        limit: usize,
    ) -> Vec<AgentId> {
        let mut found = self.matching_agents(capability, query, None);
        found.truncate(limit);
        found
    }
}
