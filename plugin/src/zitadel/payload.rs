//! What ZITADEL posts to an Actions v2 target: `{fullMethod, instanceID, orgID, projectID, userID, request,
//! response?, headers?}`, the messages in protojson (lowerCamelCase, zero values omitted). Only the calls
//! that carry a new password matter here; any other call passes untouched.

use reclaim_common::json::FieldError;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

/// The envelope of a request or response execution.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Envelope {
    #[serde(default)]
    pub full_method: String,
    /// The request message; ZITADEL omits it only when it is empty.
    #[serde(default)]
    pub request: Option<Value>,
    /// The response message (response executions only).
    #[serde(default)]
    pub response: Option<Value>,
}

/// How the caller proved its right to set the password: it decides which policy context applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Proof {
    /// `currentPassword`: the user changes their own password.
    CurrentPassword,
    /// `verificationCode`: a password reset is completed.
    VerificationCode,
    /// Neither: a privileged caller sets it (an administrator, or a new user being created).
    Privileged,
}

/// A new password found in a request message.
#[derive(Debug)]
pub(super) struct NewPassword {
    /// The user whose password it is; `None` for a user being created without a chosen id.
    pub user_id: Option<String>,
    pub password: String,
    /// `changeRequired: true`: the user must change it at the next login.
    pub change_required: bool,
    pub proof: Proof,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PasswordField {
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    change_required: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SetPasswordRequest {
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    new_password: Option<PasswordField>,
    #[serde(default)]
    current_password: Option<String>,
    #[serde(default)]
    verification_code: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddHumanUserRequest {
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    password: Option<PasswordField>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateUserRequest {
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    human: Option<AddHumanUserRequest>,
}

/// The calls that carry a new password, by the last part of their full method (v2 and v2beta alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    SetPassword,
    AddHumanUser,
    CreateUser,
}

impl Method {
    fn of(full_method: &str) -> Option<Self> {
        let (service, method) = full_method.rsplit_once('/')?;
        if !service.ends_with(".UserService") || !service.starts_with("/zitadel.user.v2") {
            return None;
        }
        match method {
            "SetPassword" => Some(Self::SetPassword),
            "AddHumanUser" => Some(Self::AddHumanUser),
            "CreateUser" => Some(Self::CreateUser),
            _ => None,
        }
    }
}

/// Reads a message with field-naming errors (`request.newPassword.password`).
fn typed<T: DeserializeOwned>(value: &Value, prefix: &str) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value.clone()).map_err(|error| {
        let path = error.path().to_string();
        let field = if path == "." {
            prefix.to_string()
        } else {
            format!("{prefix}.{path}")
        };
        FieldError::new(field, error.inner().to_string())
    })
}

/// The new password in `envelope.request`, if the call carries one; an error names the malformed field.
pub(super) fn new_password(envelope: &Envelope) -> Result<Option<NewPassword>, FieldError> {
    let Some(method) = Method::of(&envelope.full_method) else {
        return Ok(None);
    };
    let Some(request) = &envelope.request else {
        return Ok(None);
    };
    if !request.is_object() {
        return Err(FieldError::new("request", "must be a JSON object"));
    }
    let (user_id, field, proof) = match method {
        Method::SetPassword => {
            let r: SetPasswordRequest = typed(request, "request")?;
            let proof = match (r.current_password.is_some(), r.verification_code.is_some()) {
                (true, _) => Proof::CurrentPassword,
                (false, true) => Proof::VerificationCode,
                (false, false) => Proof::Privileged,
            };
            (r.user_id, r.new_password, proof)
        }
        Method::AddHumanUser => {
            let r: AddHumanUserRequest = typed(request, "request")?;
            (r.user_id, r.password, Proof::Privileged)
        }
        Method::CreateUser => {
            let r: CreateUserRequest = typed(request, "request")?;
            let password = r.human.and_then(|h| h.password);
            (r.user_id, password, Proof::Privileged)
        }
    };
    let Some(PasswordField {
        password: Some(password),
        change_required,
    }) = field
    else {
        return Ok(None);
    };
    let user_id = user_id.filter(|id| !id.is_empty());
    if method == Method::SetPassword && user_id.is_none() {
        return Err(FieldError::new("request.userId", "is required"));
    }
    Ok(Some(NewPassword {
        user_id,
        password,
        change_required: change_required.unwrap_or(false),
        proof,
    }))
}

/// The id of a user the call created (`AddHumanUserResponse.userId`, `CreateUserResponse.id`).
pub(super) fn created_user_id(response: Option<&Value>) -> Option<String> {
    let response = response?;
    response
        .get("userId")
        .or_else(|| response.get("id"))
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn envelope(value: Value) -> Envelope {
        serde_json::from_value(value).expect("envelope")
    }

    #[test]
    fn the_proof_follows_the_fields_present() {
        let method = "/zitadel.user.v2.UserService/SetPassword";
        let current = envelope(json!({"fullMethod": method, "request": {"userId": "1",
            "newPassword": {"password": "a"}, "currentPassword": "b"}}));
        let found = new_password(&current).expect("ok").expect("password");
        assert_eq!(found.proof, Proof::CurrentPassword);
        assert!(!found.change_required);
        let code = envelope(json!({"fullMethod": method, "request": {"userId": "1",
            "newPassword": {"password": "a"}, "verificationCode": "X"}}));
        assert_eq!(
            new_password(&code).expect("ok").expect("password").proof,
            Proof::VerificationCode
        );
        let admin = envelope(json!({"fullMethod": method, "request": {"userId": "1",
            "newPassword": {"password": "a", "changeRequired": true}}}));
        let found = new_password(&admin).expect("ok").expect("password");
        assert_eq!(found.proof, Proof::Privileged);
        assert!(found.change_required);
    }

    #[test]
    fn other_calls_and_calls_without_a_password_carry_none() {
        for value in [
            json!({"fullMethod": "/zitadel.user.v2.UserService/ListUsers", "request": {"password": 1}}),
            json!({"fullMethod": "/zitadel.user.v2.UserService/SetPassword",
                "request": {"userId": "1", "newPassword": {}}}),
            json!({"fullMethod": "/zitadel.user.v2.UserService/CreateUser",
                "request": {"human": {"profile": {"givenName": "M"}}}}),
        ] {
            assert!(new_password(&envelope(value)).expect("ok").is_none());
        }
    }

    #[test]
    fn malformed_fields_are_named() {
        let bad = envelope(
            json!({"fullMethod": "/zitadel.user.v2.UserService/SetPassword",
            "request": {"userId": "1", "newPassword": {"password": 7}}}),
        );
        assert_eq!(
            new_password(&bad).expect_err("bad").field,
            "request.newPassword.password"
        );
        let no_user = envelope(
            json!({"fullMethod": "/zitadel.user.v2.UserService/SetPassword",
            "request": {"newPassword": {"password": "a"}}}),
        );
        assert_eq!(
            new_password(&no_user).expect_err("bad").field,
            "request.userId"
        );
    }
}
