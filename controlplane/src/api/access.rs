//! Who may call what: the role each method needs, whether a tenant's token may call it at
//! all, the tower layer that authenticates every call of the control API and enforces both
//! before the call reaches its service, and `AccessService.WhoAmI`.
//!
//! The layer reads `authorization: Bearer <token>` once per call, refuses a missing or
//! unknown token with `UNAUTHENTICATED`, and a token whose role is too low (or a tenant's
//! token on a fleet-wide method) with `PERMISSION_DENIED` and an audit entry. It then puts
//! the token's [`Actor`] into the request, where the services find it: they apply the
//! tenant's asset prefixes to the ids a call names (refusing, and auditing, any outside
//! them) and to what a listing returns. gRPC health and reflection stay open.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use streamgate_proto::control::v1 as pb;
use tonic::{Request, Response, Status};

use crate::auth::{Actor, AdminTokens, Role};
use crate::store::{Store, audit_op};

/// The package every control-plane service is in.
const PACKAGE: &str = "/streamgate.control.v1.";

/// What a tenant's token may do with a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Fleet-wide state (keys, edges): a tenant's token is refused.
    Fleet,
    /// The call names assets (or policies, jobs) or lists them: a tenant's token may call
    /// it, and the service holds it to its prefixes.
    Tenant,
}

/// Every method of the control API: `Service/Method`, the least role that may call it, and
/// what a tenant may do with it. docs/CTL.md prints this table; the role matrix test calls
/// every row with every role.
pub const METHODS: &[(&str, Role, Scope)] = &[
    ("PolicyService/Apply", Role::Operator, Scope::Tenant),
    ("PolicyService/Get", Role::Viewer, Scope::Tenant),
    ("PolicyService/List", Role::Viewer, Scope::Tenant),
    ("PolicyService/Delete", Role::Operator, Scope::Tenant),
    ("PolicyService/Watch", Role::Viewer, Scope::Tenant),
    ("AssetService/Register", Role::Operator, Scope::Tenant),
    ("AssetService/Get", Role::Viewer, Scope::Tenant),
    ("AssetService/List", Role::Viewer, Scope::Tenant),
    ("AssetService/Update", Role::Operator, Scope::Tenant),
    ("AssetService/Delete", Role::Operator, Scope::Tenant),
    ("AssetService/Bind", Role::Operator, Scope::Tenant),
    ("KeyService/Add", Role::Admin, Scope::Fleet),
    ("KeyService/List", Role::Viewer, Scope::Fleet),
    ("KeyService/Retire", Role::Admin, Scope::Fleet),
    ("KeyService/Rotate", Role::Admin, Scope::Fleet),
    ("PurgeService/Purge", Role::Operator, Scope::Tenant),
    ("AuditService/List", Role::Viewer, Scope::Tenant),
    ("EdgeService/List", Role::Viewer, Scope::Fleet),
    ("AnalyticsService/Get", Role::Viewer, Scope::Tenant),
    ("JobService/Submit", Role::Operator, Scope::Tenant),
    ("JobService/Get", Role::Viewer, Scope::Tenant),
    ("JobService/List", Role::Viewer, Scope::Tenant),
    ("JobService/Cancel", Role::Operator, Scope::Tenant),
    ("JobService/Watch", Role::Viewer, Scope::Tenant),
    ("AccessService/WhoAmI", Role::Viewer, Scope::Tenant),
];

/// What the table says of `method` (`Service/Method`); `None` for a method it does not
/// name (the server answers those `UNIMPLEMENTED`).
pub fn rule(method: &str) -> Option<(Role, Scope)> {
    METHODS
        .iter()
        .find(|(m, ..)| *m == method)
        .map(|&(_, r, s)| (r, s))
}

/// Whether `actor` may call `method` at all (the tenant's ids are checked later).
pub fn allows(actor: &Actor, role: Role, scope: Scope) -> bool {
    actor.role >= role && !(scope == Scope::Fleet && actor.is_tenant())
}

/// The caller of `req` (put there by [`AdminAuth`]); a full-rights `unknown` when the
/// service runs without it (unit tests of a bare service).
pub(crate) fn caller<T>(req: &Request<T>) -> Actor {
    req.extensions()
        .get::<Actor>()
        .cloned()
        .unwrap_or_else(|| Actor::admin("unknown"))
}

/// Writes the audit entry of a refused call: `denied`, naming the method and, for a
/// tenant's call outside its prefixes, the object. A store that does not answer is logged,
/// and the call is refused all the same.
pub async fn audit_denial(store: &dyn Store, actor: &str, target: &str) {
    if let Err(e) = store
        .txn(&[], vec![audit_op(actor, "denied", target, 0)])
        .await
    {
        tracing::warn!(actor, target, error = %e, "could not audit a refused call");
    }
}

/// Refuses a tenant's call on `what` (`assets/x`, `policies/x`, `jobs/x`) outside its
/// prefixes: audits it and returns the `PERMISSION_DENIED` to send.
pub(crate) async fn deny_outside(
    store: &dyn Store,
    actor: &Actor,
    method: &str,
    what: &str,
) -> Status {
    audit_denial(store, &actor.name, &format!("{method} {what}")).await;
    Status::permission_denied(format!(
        "token {:?} is limited to assets {}; {what} is outside them",
        actor.name,
        actor.assets.join(", ")
    ))
}

/// Checks that a tenant's token may touch `id` (an asset, policy or job's asset id);
/// refuses and audits otherwise.
pub(crate) async fn check_id(
    store: &dyn Store,
    actor: &Actor,
    method: &str,
    kind: &str,
    id: &str,
) -> Result<(), Status> {
    if actor.may_touch(id) {
        Ok(())
    } else {
        Err(deny_outside(store, actor, method, &format!("{kind}/{id}")).await)
    }
}

/// Authenticates every call of the control API and enforces [`METHODS`] (a tower layer
/// around the whole server, inside the metrics layer so refusals are counted).
#[derive(Clone)]
pub struct AdminAuth {
    tokens: AdminTokens,
    store: Option<Arc<dyn Store>>,
}

impl AdminAuth {
    /// Accepts any of `lines` (`token` or `name:token`, then `role=` and `assets=`; see
    /// [`crate::auth::parse_token_line`]).
    pub fn new(lines: Vec<String>) -> Self {
        Self {
            tokens: AdminTokens::new(&lines),
            store: None,
        }
    }

    /// The tokens it accepts.
    pub fn tokens(&self) -> &AdminTokens {
        &self.tokens
    }

    /// Audits refusals into `store`.
    pub(crate) fn with_store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// The decision for one call: the actor to hand to the service, or the refusal (and
    /// what to audit: the actor's name and the method).
    fn decide(
        &self,
        path: &str,
        header: Option<&str>,
    ) -> Result<Actor, (Status, Option<(String, String)>)> {
        let method = path.strip_prefix(PACKAGE).unwrap_or(path);
        let actor = self
            .tokens
            .authorize(header)
            .map_err(|e| (Status::unauthenticated(e.to_string()), None))?;
        let Some((role, scope)) = rule(method) else {
            // Not a method of the API: the router answers UNIMPLEMENTED.
            return Ok(actor.clone());
        };
        if allows(actor, role, scope) {
            return Ok(actor.clone());
        }
        let why = if actor.role < role {
            format!(
                "{method} needs the {} role; token {:?} has {}",
                role.as_str(),
                actor.name,
                actor.role.as_str()
            )
        } else {
            format!(
                "{method} is fleet-wide; token {:?} is limited to assets {}",
                actor.name,
                actor.assets.join(", ")
            )
        };
        Err((
            Status::permission_denied(why),
            Some((actor.name.clone(), method.to_owned())),
        ))
    }
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuth")
            .field("tokens", &self.tokens)
            .finish()
    }
}

impl<S> tower_layer::Layer<S> for AdminAuth {
    type Service = Authorized<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorized {
            inner,
            auth: self.clone(),
        }
    }
}

/// The service [`AdminAuth`] makes.
#[derive(Clone)]
pub struct Authorized<S> {
    inner: S,
    auth: AdminAuth,
}

impl<S, ReqB> tower_service::Service<http::Request<ReqB>> for Authorized<S>
where
    S: tower_service::Service<http::Request<ReqB>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ReqB: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<ReqB>) -> Self::Future {
        if !req.uri().path().starts_with(PACKAGE) {
            // gRPC health and reflection are open.
            return Box::pin(self.inner.call(req));
        }
        let header = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match self.auth.decide(req.uri().path(), header) {
            Ok(actor) => {
                req.extensions_mut().insert(actor);
                // The readied service serves this call; a clone is readied for the next.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(inner.call(req))
            }
            Err((status, audit)) => {
                let store = self.auth.store.clone();
                Box::pin(async move {
                    if let (Some(store), Some((actor, method))) = (store, audit) {
                        audit_denial(&*store, &actor, &method).await;
                    }
                    Ok(status.into_http())
                })
            }
        }
    }
}

/// `AccessService`: who the caller is.
pub struct AccessApi;

#[tonic::async_trait]
impl pb::access_service_server::AccessService for AccessApi {
    async fn who_am_i(
        &self,
        req: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let actor = caller(&req);
        Ok(Response::new(pb::WhoAmIResponse {
            name: actor.name.clone(),
            role: actor.role.as_str().to_owned(),
            asset_prefixes: actor.assets.to_vec(),
            allowed: METHODS
                .iter()
                .filter(|&&(_, r, s)| allows(&actor, r, s))
                .map(|(m, ..)| (*m).to_owned())
                .collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table names every method of every control-plane service, and nothing else.
    #[test]
    fn the_table_covers_every_method() {
        use prost::Message;
        let set =
            prost_types::FileDescriptorSet::decode(streamgate_proto::FILE_DESCRIPTOR_SET).unwrap();
        let mut methods: Vec<String> = set
            .file
            .iter()
            .filter(|f| f.package() == "streamgate.control.v1")
            .flat_map(|f| &f.service)
            .flat_map(|s| {
                s.method
                    .iter()
                    .map(move |m| format!("{}/{}", s.name(), m.name()))
            })
            .collect();
        methods.sort();
        let mut table: Vec<String> = METHODS.iter().map(|(m, ..)| (*m).to_owned()).collect();
        table.sort();
        assert_eq!(methods, table);
    }
}
