//! Registration and identity ops: `register`, the discovery reads, `set_*` and `unregister`.

use super::params::{key_text, slice_index, Params};
use super::Reply;
use crate::hub::wire::{self, hashable, py_iter, wrong_type};
use crate::hub::{python_slice, Hub, Passport};
use crate::ids::{AgentId, EndpointId};
use crate::json::{py_repr, py_str, py_truthy, py_type_name};
use crate::proto::{ErrorKind, HubError};
use crate::time::Now;
use serde_json::{Map, Value};
use std::sync::Arc;

type OpResult = Result<Reply, HubError>;

fn done(value: Value) -> OpResult {
    Ok(Reply::Done(value))
}

impl Hub {
    /// `register`: parse the records (passport, resume, rule) in ag2's order, validate the auth
    /// claim, register, store the SKILL.md, bind the calling connection.
    pub(super) fn op_register(
        &mut self,
        now: Now,
        endpoint: EndpointId,
        p: Params<'_>,
    ) -> OpResult {
        let wire = wire::passport_from_dict(p.req("passport")?)?;
        let resume = wire::resume_from_dict(p.req("resume")?)?;
        let rule = match p.get("rule") {
            Some(rule) => Some(wire::rule_from_dict(rule)?),
            None => None,
        };
        let skill = match p.get("skill_md") {
            None => None,
            Some(Value::String(skill)) => Some(skill.clone()),
            Some(other) => return Err(wrong_type("skill_md", "a str", other)),
        };
        let (scheme, claim) = wire.scheme_and_claim()?;
        let scheme = self.registered_scheme(scheme)?;
        let claim = match claim {
            Value::Object(claim) => claim.clone(),
            // NoAuth never reads the claim; ApiKeyAuth calls `claim.get("token")`.
            other if scheme == "api_key" => {
                return Err(HubError::new(
                    ErrorKind::Attribute,
                    format!("'{}' object has no attribute 'get'", py_type_name(other)),
                ))
            }
            _ => Map::new(),
        };
        let Value::String(name) = wire.name.clone() else {
            return Err(self.refuse_name(&scheme, &claim, &wire.name));
        };
        let mut passport = wire.into_passport(name, scheme);
        let agent = self.register_with_claim(now, &mut passport, &claim, resume, rule)?;
        if let Some(skill) = skill {
            self.store_skill(agent, skill);
        }
        self.bind_endpoint(endpoint, agent)?;
        done(wire::passport_json(&passport))
    }

    /// What registering a passport whose `name` is not a string raises: the auth adapter reads
    /// the name first (ApiKeyAuth looks it up), then the agent-id regex refuses it.
    fn refuse_name(&self, scheme: &str, claim: &Map<String, Value>, name: &Value) -> HubError {
        let api_key = scheme == "api_key" && self.config.auth.api_keys.is_some();
        if !api_key {
            if let Err(error) = self.config.auth.validate(scheme, "", claim) {
                return error;
            }
            return HubError::type_error(format!(
                "expected string or bytes-like object, got '{}'",
                py_type_name(name)
            ));
        }
        let token = claim.get("token").and_then(Value::as_str);
        if token.is_none_or(str::is_empty) {
            return HubError::new(
                ErrorKind::Auth,
                "api_key claim missing required string field 'token'",
            );
        }
        match hashable(name) {
            Err(error) => error,
            Ok(name) => HubError::new(
                ErrorKind::Auth,
                format!("no api_key registered for {}", py_repr(name)),
            ),
        }
    }

    /// `AuthRegistry.get(scheme)` for a scheme that is not a string: always unknown.
    fn registered_scheme(&self, scheme: &Value) -> Result<String, HubError> {
        match scheme {
            Value::String(scheme) => Ok(scheme.clone()),
            other => Err(HubError::new(
                ErrorKind::Auth,
                format!("unknown auth scheme: {}", py_repr(hashable(other)?)),
            )),
        }
    }

    pub(super) fn op_get_agent(&self, p: Params<'_>) -> OpResult {
        let name_or_id = p.req("name_or_id")?;
        let passport = match key_text(name_or_id)? {
            Some(text) => self.get_agent(text)?.1,
            None => {
                return Err(HubError::not_found(format!(
                    "agent not found: {}",
                    py_str(name_or_id)
                )))
            }
        };
        done(wire::passport_json(passport))
    }

    pub(super) fn op_get_resume(&self, p: Params<'_>) -> OpResult {
        let agent = p.req("agent_id")?;
        let text = key_text(agent)?.map_or_else(|| py_str(agent), str::to_string);
        done(wire::resume_json(self.get_resume(&text)?))
    }

    pub(super) fn op_get_rule(&self, p: Params<'_>) -> OpResult {
        let agent = p.req("agent_id")?;
        let text = key_text(agent)?.map_or_else(|| py_str(agent), str::to_string);
        done(wire::rule_json(self.get_rule(&text)?))
    }

    pub(super) fn op_get_skill(&self, p: Params<'_>) -> OpResult {
        let agent = key_text(p.req("agent_id")?)?.and_then(AgentId::parse);
        let skill = agent.and_then(|agent| self.skill_of(agent));
        done(skill.map_or(Value::Null, Value::from))
    }

    pub(super) fn op_find_agent_id(&self, p: Params<'_>) -> OpResult {
        let name = key_text(p.req("name")?)?;
        let agent = name.and_then(|name| self.find_agent_id(name));
        done(agent.map_or(Value::Null, |agent| Value::String(agent.to_string())))
    }

    /// `names_for`: `{aid: name_for(aid) for aid in agent_ids}`; an unknown id maps to itself.
    pub(super) fn op_names_for(&self, p: Params<'_>) -> OpResult {
        let mut names = Map::new();
        for agent in py_iter(p.req("agent_ids")?)? {
            let name = match hashable(&agent)? {
                Value::String(text) => Value::from(self.name_for(text)),
                other => other.clone(),
            };
            names.insert(json_key(&agent), name);
        }
        done(Value::Object(names))
    }

    /// `list_agents`: kind, capability and summary filters, an optional sort by name, then the
    /// Python slice `[:limit]`.
    pub(super) fn op_list_agents(&self, p: Params<'_>) -> OpResult {
        let query = match p.get("query") {
            Some(Value::String(query)) => Some(query.as_str()),
            Some(other) if py_truthy(other) => {
                return Err(HubError::new(
                    ErrorKind::Attribute,
                    format!("'{}' object has no attribute 'lower'", py_type_name(other)),
                ))
            }
            _ => None,
        };
        let mut agents: Vec<&Arc<Passport>> = match (p.get("capability"), p.get("kind")) {
            (Some(capability), _) if !capability.is_string() => {
                hashable(capability)?;
                Vec::new()
            }
            (_, Some(kind)) if !kind.is_string() => Vec::new(),
            (capability, kind) => self
                .matching_entries(
                    capability.and_then(Value::as_str),
                    query,
                    kind.and_then(Value::as_str),
                )
                .map(|(_, entry)| &entry.passport)
                .collect(),
        };
        if p.get("sort_by").and_then(Value::as_str) == Some("name") {
            // A stable sort by the registered name (every agent has its own).
            agents.sort_by(|a, b| a.name.cmp(&b.name));
        }
        let fifty = Value::from(50);
        let range = python_slice(agents.len(), None, slice_index(p.get_or("limit", &fifty))?);
        let passports = agents[range].iter().map(|passport| Arc::clone(passport));
        // The passports are shared, and written out only when the response is encoded.
        Ok(Reply::Deferred(Arc::new(wire::Passports(
            passports.collect(),
        ))))
    }

    pub(super) fn op_set_resume(
        &mut self,
        now: Now,
        endpoint: EndpointId,
        p: Params<'_>,
    ) -> OpResult {
        let agent = self.require_bound(endpoint, p.req("agent_id")?)?;
        let resume = wire::resume_from_dict(p.req("resume")?)?;
        self.set_resume(now, agent, resume)?;
        done(Value::Null)
    }

    pub(super) fn op_set_skill(
        &mut self,
        now: Now,
        endpoint: EndpointId,
        p: Params<'_>,
    ) -> OpResult {
        let agent = self.require_bound(endpoint, p.req("agent_id")?)?;
        let skill = match p.get("skill_md") {
            None => None,
            Some(Value::String(skill)) => Some(skill.clone()),
            Some(other) => return Err(wrong_type("skill_md", "a str", other)),
        };
        self.set_skill(now, agent, skill)?;
        done(Value::Null)
    }

    pub(super) fn op_set_rule(
        &mut self,
        now: Now,
        endpoint: EndpointId,
        p: Params<'_>,
    ) -> OpResult {
        let agent = self.require_bound(endpoint, p.req("agent_id")?)?;
        let rule = wire::rule_from_dict(p.req("rule")?)?;
        self.set_rule(now, agent, rule)?;
        done(Value::Null)
    }

    pub(super) fn op_unregister(
        &mut self,
        now: Now,
        endpoint: EndpointId,
        p: Params<'_>,
    ) -> OpResult {
        let agent = self.require_bound(endpoint, p.req("agent_id")?)?;
        self.unregister(now, agent)?;
        done(Value::Null)
    }
}

/// The key `json.dumps` writes for a dict key that Python may hold as a number, bool or `None`.
fn json_key(key: &Value) -> String {
    match key {
        Value::String(text) => text.clone(),
        Value::Null => "null".to_string(),
        Value::Bool(flag) => flag.to_string(),
        other => py_str(other),
    }
}
