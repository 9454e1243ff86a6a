//! The hook handlers. Each has its call authenticated and parsed (`call.rs`), answers a retry (same
//! `Ory-Webhook-Trigger-ID`) with the first answer, and otherwise decides with the password service, syncing
//! with Kratos's admin API where needed (`sync.rs`).

use super::admin::KratosAdmin;
use super::call::{parse_call, Call, HookError};
use super::messages::{self, AdapterMessage};
use super::response::{self, Target, UiMessage};
use super::sync::{self, import_current_hash, publish_state};
use crate::passwords::{Passwords, PasswordsError};
use crate::policy::{ChangeContext, Locale};
use crate::verdicts::{FlowId, Verdict};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, SecondsFormat, Utc};
use reclaim_common::idempotency::{self, Waited};
use reclaim_common::settings::{FailurePolicy, KratosSettings};
use reclaim_common::Db;
use serde_json::{Map, Value};

/// How long a retry waits for the first call with its trigger id to answer before it gets the failure answer
/// of `plugin.kratos.on_error`; bounded so that a stuck first call never holds its retries.
const RETRY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Everything the hooks need, shared by all workers.
#[derive(Clone)]
pub struct KratosHooks {
    pub passwords: Passwords,
    pub settings: KratosSettings,
    pub admin: Option<KratosAdmin>,
    pub db: Db,
}

/// The hooks' OpenAPI paths, merged into the plugin's document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    registration,
    registration_after,
    login,
    recovery,
    settings_password,
    settings_password_after,
    super::migration::migrate_password,
))]
pub struct HooksDoc;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/hooks/kratos/registration", web::post().to(registration))
        .route(
            "/hooks/kratos/registration/after",
            web::post().to(registration_after),
        )
        .route("/hooks/kratos/login", web::post().to(login))
        .route("/hooks/kratos/recovery", web::post().to(recovery))
        .route(
            "/hooks/kratos/settings/password",
            web::post().to(settings_password),
        )
        .route(
            "/hooks/kratos/settings/password/after",
            web::post().to(settings_password_after),
        )
        .route(
            "/hooks/kratos/password-migration",
            web::post().to(super::migration::migrate_password),
        );
}

/// The answer of a hook, kept so a retry gets the same one.
#[derive(Debug, Clone, PartialEq)]
struct Reply {
    status: StatusCode,
    body: Option<Value>,
}

impl Reply {
    fn proceed() -> Self {
        Self {
            status: StatusCode::NO_CONTENT,
            body: None,
        }
    }

    fn refuse(status: StatusCode, target: Target, messages: &[UiMessage]) -> Self {
        let response = response::interrupt_body(target, messages);
        Self {
            status,
            body: Some(response),
        }
    }

    /// A refusal with messages the edge guard rendered when it checked the password.
    fn refuse_staged(target: Target, messages: Value) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            body: Some(response::interrupt_body_staged(target, messages)),
        }
    }

    fn metadata(existing: Map<String, Value>, ours: Map<String, Value>) -> Self {
        Self {
            status: StatusCode::OK,
            body: Some(response::metadata_public_body(existing, ours)),
        }
    }

    fn into_response(self) -> HttpResponse {
        match self.body {
            Some(body) => HttpResponse::build(self.status).json(body),
            None => HttpResponse::build(self.status).finish(),
        }
    }
}

/// Which hook: names the idempotency scope, the failure policy and the log lines.
#[derive(Debug, Clone, Copy)]
enum Hook {
    Registration,
    RegistrationAfter,
    Login,
    Recovery,
    SettingsPassword,
    SettingsPasswordAfter,
}

impl Hook {
    fn scope(self) -> &'static str {
        match self {
            Self::Registration => "kratos.registration",
            Self::RegistrationAfter => "kratos.registration.after",
            Self::Login => "kratos.login",
            Self::Recovery => "kratos.recovery",
            Self::SettingsPassword => "kratos.settings.password",
            Self::SettingsPasswordAfter => "kratos.settings.password.after",
        }
    }

    fn on_error(self, settings: &KratosSettings) -> FailurePolicy {
        match self {
            Self::Registration | Self::RegistrationAfter => settings.on_error.registration,
            Self::Login => settings.on_error.login,
            Self::Recovery => settings.on_error.recovery,
            Self::SettingsPassword | Self::SettingsPasswordAfter => settings.on_error.settings,
        }
    }
}

/// Runs `decide` once per trigger id: the id is claimed before deciding, so a retry, even a concurrent one,
/// waits for the first answer and gets it. The claim commits on its own because deciding spans several
/// transactions and calls to Kratos's admin API; a failed or cancelled decision releases it so that a retry
/// decides.
async fn once<F>(
    hooks: &KratosHooks,
    hook: Hook,
    call: &Call,
    bytes: &[u8],
    now: DateTime<Utc>,
    decide: F,
) -> HttpResponse
where
    F: AsyncFnOnce(&Call, DateTime<Utc>) -> Result<Reply, PasswordsError>,
{
    let scope = hook.scope();
    let claimed = match &call.trigger {
        None => None,
        Some(key) => {
            let request = idempotency::Request::new(scope, key.clone(), bytes)
                .about(call.identity.id.as_str());
            match idempotency::claim_or_wait(&hooks.db, &request, RETRY_WAIT).await {
                Ok(Waited::Claimed(claim)) => Some(claim),
                Ok(Waited::Answered(first)) if first.same_request => {
                    tracing::info!(hook = scope, "Kratos retry answered with the first answer");
                    return idempotency::replay(&first);
                }
                Ok(Waited::Pending { same_request: true }) => {
                    tracing::warn!(
                        hook = scope,
                        "the first call with this trigger id is still deciding"
                    );
                    return failure_reply(hook, &hooks.settings, call.locale).into_response();
                }
                // The trigger id came with another body: decide this call on its own, remember nothing.
                Ok(_) => None,
                Err(error) => {
                    tracing::warn!(hook = scope, error = %error, "could not claim the Kratos trigger id");
                    None
                }
            }
        }
    };
    // A failed decision drops the claim, which releases it so that Kratos's retry decides again.
    let reply = match decide(call, now).await {
        Ok(reply) => reply,
        Err(error) => {
            tracing::error!(hook = scope, error = %error, "Kratos hook could not decide");
            return failure_reply(hook, &hooks.settings, call.locale).into_response();
        }
    };
    if let Some(claim) = claimed {
        let body = reply
            .body
            .as_ref()
            .map(Value::to_string)
            .unwrap_or_default();
        if let Err(error) = claim.complete(reply.status.as_u16(), body).await {
            tracing::warn!(hook = scope, error = %error, "could not remember the Kratos answer");
        }
    }
    reply.into_response()
}

/// Our database is unavailable: let the flow go on, or refuse with a message, as configured.
fn failure_reply(hook: Hook, settings: &KratosSettings, locale: Locale) -> Reply {
    match hook.on_error(settings) {
        FailurePolicy::Open => Reply::proceed(),
        FailurePolicy::Closed => Reply::refuse(
            StatusCode::BAD_REQUEST,
            Target::Global,
            &[AdapterMessage::Unavailable.ui(locale)],
        ),
    }
}

/// The flow id of the hook call (`ctx.flow.id`), which keys the guard's verdicts.
fn flow_of(call: &Call) -> Option<FlowId> {
    call.body
        .flow
        .as_ref()
        .and_then(|f| f.id.as_deref())
        .and_then(FlowId::parse)
}

fn timestamp(at: DateTime<Utc>) -> Value {
    Value::String(at.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// The keys we own in `metadata_public`.
fn password_metadata(
    changed_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
) -> Map<String, Value> {
    let mut ours = Map::new();
    ours.insert("password_changed_at".into(), timestamp(changed_at));
    ours.insert(
        "password_expires_at".into(),
        expires_at.map_or(Value::Null, timestamp),
    );
    ours
}

/// [`sync::ensure_known`] for the identity a hook call names.
async fn ensure_known(
    hooks: &KratosHooks,
    call: &Call,
    now: DateTime<Utc>,
) -> Result<(), PasswordsError> {
    sync::ensure_known(
        &hooks.passwords,
        hooks.admin.as_ref(),
        &hooks.settings,
        &call.identity,
        &call.body.identity.metadata_public_object(),
        now,
    )
    .await
}

/// Authenticates and parses a hook call, then decides it once per trigger id.
async fn respond<F>(
    hook: Hook,
    req: &HttpRequest,
    bytes: &[u8],
    hooks: &KratosHooks,
    decide: F,
) -> Result<HttpResponse, HookError>
where
    F: AsyncFnOnce(&Call, DateTime<Utc>) -> Result<Reply, PasswordsError>,
{
    let fallback = hooks.passwords.policy().default_locale();
    let call = parse_call(req, bytes, &hooks.settings, fallback)?;
    let now = hooks.passwords.clock().now();
    Ok(once(hooks, hook, &call, bytes, now, decide).await)
}

/// Kratos's registration `before`/password hook: refuses a password the policy refuses.
#[utoipa::path(
    post,
    path = "/hooks/kratos/registration",
    tag = "kratos",
    request_body(content = Object, description = "The body of Reclaim's Kratos web hook (the identity, the flow, and for password hooks the password; `plugin.kratos` README section)"),
    responses(
        (status = 200, description = "Go on, and store this in the identity's `metadata_public`", body = Object),
        (status = 204, description = "Go on"),
        (status = 400, description = "Refused: Kratos shows these messages (`{\"messages\": [...]}`); or the body is malformed", body = Object),
        (status = 401, description = "Missing or wrong Kratos credentials (`plugin.kratos.auth`)"),
    ),
    security(())
)]
async fn registration(
    req: HttpRequest,
    bytes: web::Bytes,
    hooks: web::Data<KratosHooks>,
) -> Result<HttpResponse, HookError> {
    respond(
        Hook::Registration,
        &req,
        &bytes,
        &hooks,
        async |call: &Call, now| {
            let profile = hooks.passwords.policy().select(&call.identity.traits());
            if call.body.identity.is_persisted() {
                hooks.passwords.initialise(&call.identity, now).await?;
            }
            Ok(Reply::metadata(
                call.body.identity.metadata_public_object(),
                password_metadata(now, profile.expires_at(now)),
            ))
        },
    )
    .await
}

/// Kratos's registration `after` hook: the first password enters the history.
#[utoipa::path(
    post,
    path = "/hooks/kratos/registration/after",
    tag = "kratos",
    request_body(content = Object, description = "The body of Reclaim's Kratos web hook (the identity, the flow, and for password hooks the password; `plugin.kratos` README section)"),
    responses(
        (status = 204, description = "Go on"),
        (status = 400, description = "Refused: Kratos shows these messages (`{\"messages\": [...]}`); or the body is malformed", body = Object),
        (status = 401, description = "Missing or wrong Kratos credentials (`plugin.kratos.auth`)"),
    ),
    security(())
)]
async fn registration_after(
    req: HttpRequest,
    bytes: web::Bytes,
    hooks: web::Data<KratosHooks>,
) -> Result<HttpResponse, HookError> {
    respond(
        Hook::RegistrationAfter,
        &req,
        &bytes,
        &hooks,
        async |call: &Call, now| {
            hooks.passwords.initialise(&call.identity, now).await?;
            // The guard saw the password of this registration: its digest is the first history entry, and
            // Kratos's hash need not be imported.
            let committed = match flow_of(call) {
                Some(flow) => {
                    hooks
                        .passwords
                        .commit_registration(&flow, &call.identity, now)
                        .await?
                }
                None => false,
            };
            if !committed {
                import_current_hash(
                    &hooks.passwords,
                    hooks.admin.as_ref(),
                    &hooks.settings,
                    &call.identity,
                    now,
                )
                .await;
            }
            Ok(Reply::proceed())
        },
    )
    .await
}

/// Kratos's login `after` hook: refuses a login whose password has expired or must change.
#[utoipa::path(
    post,
    path = "/hooks/kratos/login",
    tag = "kratos",
    request_body(content = Object, description = "The body of Reclaim's Kratos web hook (the identity, the flow, and for password hooks the password; `plugin.kratos` README section)"),
    responses(
        (status = 204, description = "Go on"),
        (status = 400, description = "Refused: Kratos shows these messages (`{\"messages\": [...]}`); or the body is malformed", body = Object),
        (status = 401, description = "Missing or wrong Kratos credentials (`plugin.kratos.auth`)"),
        (status = 403, description = "Login refused: the password has expired or must change", body = Object),
    ),
    security(())
)]
async fn login(
    req: HttpRequest,
    bytes: web::Bytes,
    hooks: web::Data<KratosHooks>,
) -> Result<HttpResponse, HookError> {
    respond(Hook::Login, &req, &bytes, &hooks, async |call: &Call, now| {
        ensure_known(&hooks, call, now).await?;
        let outcome = hooks.passwords.on_login(&call.identity, now, Some(call.locale)).await?;
        if outcome.allowed {
            return Ok(Reply::proceed());
        }
        let notice: Vec<UiMessage> = outcome.notice.iter().map(messages::from_violation).collect();
        tracing::info!(identity.id = %call.identity.id, status = ?outcome.status, "Kratos login refused");
        Ok(Reply::refuse(StatusCode::FORBIDDEN, Target::Global, &notice))
    })
    .await
}

/// Kratos's recovery `after` hook: the next password change counts as a recovery.
#[utoipa::path(
    post,
    path = "/hooks/kratos/recovery",
    tag = "kratos",
    request_body(content = Object, description = "The body of Reclaim's Kratos web hook (the identity, the flow, and for password hooks the password; `plugin.kratos` README section)"),
    responses(
        (status = 204, description = "Go on"),
        (status = 400, description = "Refused: Kratos shows these messages (`{\"messages\": [...]}`); or the body is malformed", body = Object),
        (status = 401, description = "Missing or wrong Kratos credentials (`plugin.kratos.auth`)"),
    ),
    security(())
)]
async fn recovery(
    req: HttpRequest,
    bytes: web::Bytes,
    hooks: web::Data<KratosHooks>,
) -> Result<HttpResponse, HookError> {
    respond(
        Hook::Recovery,
        &req,
        &bytes,
        &hooks,
        async |call: &Call, now| {
            ensure_known(&hooks, call, now).await?;
            let state = hooks.passwords.mark_recovered(&call.identity.id).await?;
            publish_state(hooks.admin.as_ref(), &state).await;
            Ok(Reply::proceed())
        },
    )
    .await
}

/// Kratos's settings (password) `before` hook: refuses a new password the policy refuses.
#[utoipa::path(
    post,
    path = "/hooks/kratos/settings/password",
    tag = "kratos",
    request_body(content = Object, description = "The body of Reclaim's Kratos web hook (the identity, the flow, and for password hooks the password; `plugin.kratos` README section)"),
    responses(
        (status = 200, description = "Go on, and store this in the identity's `metadata_public`", body = Object),
        (status = 204, description = "Go on"),
        (status = 400, description = "Refused: Kratos shows these messages (`{\"messages\": [...]}`); or the body is malformed", body = Object),
        (status = 401, description = "Missing or wrong Kratos credentials (`plugin.kratos.auth`)"),
    ),
    security(())
)]
async fn settings_password(
    req: HttpRequest,
    bytes: web::Bytes,
    hooks: web::Data<KratosHooks>,
) -> Result<HttpResponse, HookError> {
    respond(
        Hook::SettingsPassword,
        &req,
        &bytes,
        &hooks,
        async |call: &Call, now| {
            ensure_known(&hooks, call, now).await?;
            let staged = match flow_of(call) {
                Some(flow) => {
                    hooks
                        .passwords
                        .take_settings_verdict(&flow, &call.identity.id)
                        .await?
                }
                None => None,
            };
            if let Some(Verdict::Refused { codes, messages }) = staged {
                tracing::info!(identity.id = %call.identity.id, codes = ?codes, "Kratos settings change refused by the guard's verdict");
                return Ok(Reply::refuse_staged(Target::Password, messages));
            }
            let context = if call.body.session_from_recovery() {
                ChangeContext::Recovery
            } else {
                ChangeContext::Voluntary
            };
            let verdict = hooks
                .passwords
                .check_change_without_password(&call.identity, context, now, Some(call.locale))
                .await?;
            if !verdict.decision.allowed {
                let refusals: Vec<UiMessage> = verdict
                    .decision
                    .violations
                    .iter()
                    .map(messages::from_violation)
                    .collect();
                return Ok(Reply::refuse(
                    StatusCode::BAD_REQUEST,
                    Target::Password,
                    &refusals,
                ));
            }
            if hooks.settings.require_staged_verdict && staged.is_none() {
                return Ok(Reply::refuse(
                    StatusCode::BAD_REQUEST,
                    Target::Password,
                    &[AdapterMessage::NotChecked.ui(call.locale)],
                ));
            }
            Ok(Reply::metadata(
                call.body.identity.metadata_public_object(),
                password_metadata(now, verdict.expires_at),
            ))
        },
    )
    .await
}

/// Kratos's settings (password) `after` hook: the new password enters the history.
#[utoipa::path(
    post,
    path = "/hooks/kratos/settings/password/after",
    tag = "kratos",
    request_body(content = Object, description = "The body of Reclaim's Kratos web hook (the identity, the flow, and for password hooks the password; `plugin.kratos` README section)"),
    responses(
        (status = 204, description = "Go on"),
        (status = 400, description = "Refused: Kratos shows these messages (`{\"messages\": [...]}`); or the body is malformed", body = Object),
        (status = 401, description = "Missing or wrong Kratos credentials (`plugin.kratos.auth`)"),
    ),
    security(())
)]
async fn settings_password_after(
    req: HttpRequest,
    bytes: web::Bytes,
    hooks: web::Data<KratosHooks>,
) -> Result<HttpResponse, HookError> {
    respond(
        Hook::SettingsPasswordAfter,
        &req,
        &bytes,
        &hooks,
        async |call: &Call, now| {
            ensure_known(&hooks, call, now).await?;
            let flow = flow_of(call);
            hooks
                .passwords
                .password_changed(&call.identity, now, flow.as_ref())
                .await?;
            Ok(Reply::proceed())
        },
    )
    .await
}
