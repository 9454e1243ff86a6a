//! What ZITADEL posts to an Actions v2 target: `{fullMethod, instanceID, orgID, projectID, userID, request,
//! response?, headers?}`, the messages in protojson (lowerCamelCase, zero values omitted). Only the calls
//! that carry a new password matter here; any other call passes untouched. The calls that create a user
//! (`AddHumanUser`, `CreateUser`) also give the user's email and phone, which address the notices.

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
    /// The contacts the call gives the user; none for `SetPassword`.
    pub contacts: Contacts,
}

/// An email and a phone read from a request message, normalised: the email trimmed, `None` when empty; the
/// phone only in E.164 (`+` and up to 15 digits), as ZITADEL stores it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Contacts {
    pub email: Option<String>,
    pub phone: Option<String>,
}

impl Contacts {
    fn of(email: Option<EmailField>, phone: Option<PhoneField>) -> Self {
        let email = email
            .and_then(|e| e.email)
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty());
        let phone = phone.and_then(|p| p.phone).and_then(|p| {
            if is_e164(&p) {
                Some(p)
            } else {
                tracing::debug!(
                    phone = %reclaim_common::secret::mask_address(&p),
                    "ZITADEL phone is not in E.164 form; not kept"
                );
                None
            }
        });
        Self { email, phone }
    }
}

/// `+` then 2 to 15 digits, the first not 0.
fn is_e164(phone: &str) -> bool {
    let Some(digits) = phone.strip_prefix('+') else {
        return false;
    };
    (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
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

/// `SetHumanEmail`: only the address matters here (not `isVerified`, `sendCode`...).
#[derive(Debug, Default, Deserialize)]
struct EmailField {
    #[serde(default)]
    email: Option<String>,
}

/// `SetHumanPhone`: only the number matters here.
#[derive(Debug, Default, Deserialize)]
struct PhoneField {
    #[serde(default)]
    phone: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddHumanUserRequest {
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    password: Option<PasswordField>,
    #[serde(default)]
    email: Option<EmailField>,
    #[serde(default)]
    phone: Option<PhoneField>,
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
    let (user_id, field, proof, contacts) = match method {
        Method::SetPassword => {
            let r: SetPasswordRequest = typed(request, "request")?;
            let proof = match (r.current_password.is_some(), r.verification_code.is_some()) {
                (true, _) => Proof::CurrentPassword,
                (false, true) => Proof::VerificationCode,
                (false, false) => Proof::Privileged,
            };
            (r.user_id, r.new_password, proof, Contacts::default())
        }
        Method::AddHumanUser => {
            let r: AddHumanUserRequest = typed(request, "request")?;
            let contacts = Contacts::of(r.email, r.phone);
            (r.user_id, r.password, Proof::Privileged, contacts)
        }
        Method::CreateUser => {
            let r: CreateUserRequest = typed(request, "request")?;
            let (password, contacts) = match r.human {
                Some(h) => (h.password, Contacts::of(h.email, h.phone)),
                None => (None, Contacts::default()),
            };
            (r.user_id, password, Proof::Privileged, contacts)
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
        contacts,
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

    fn contract(name: &str) -> Value {
        let path = format!(
            "{}/../../shared/contracts/zitadel/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).expect("contract file");
        serde_json::from_str(&text).expect("contract is JSON")
    }

    #[test]
    fn create_user_gives_the_new_users_email_and_phone() {
        let mut value = contract("actions-v2-request-createuser.docs-example.json");
        value["request"]["human"]["password"] = json!({"password": "A-first-P4ssw0rd"});
        value["request"]["human"]["phone"] = json!({"phone": "+41791234567", "isVerified": true});
        let found = new_password(&envelope(value))
            .expect("ok")
            .expect("password");
        assert_eq!(found.proof, Proof::Privileged);
        assert_eq!(
            found.contacts,
            Contacts {
                email: Some("mini1@mouse.com".into()),
                phone: Some("+41791234567".into()),
            }
        );
    }

    #[test]
    fn add_human_user_contacts_are_trimmed_and_a_phone_not_in_e164_is_dropped() {
        let method = "/zitadel.user.v2.UserService/AddHumanUser";
        let add = |email: Value, phone: Value| {
            let value = json!({"fullMethod": method, "request": {"userId": "1",
                "password": {"password": "a"}, "email": email, "phone": phone}});
            new_password(&envelope(value))
                .expect("ok")
                .expect("password")
                .contacts
        };
        assert_eq!(
            add(
                json!({"email": "  jane@example.com\n", "sendCode": {}}),
                json!({"phone": "+14155552671"})
            ),
            Contacts {
                email: Some("jane@example.com".into()),
                phone: Some("+14155552671".into()),
            }
        );
        for phone in ["0791234567", "+41 79 123 45 67", "+0791234567", "+", ""] {
            assert_eq!(
                add(json!({"email": "   "}), json!({"phone": phone})),
                Contacts::default(),
                "{phone}"
            );
        }
    }

    #[test]
    fn set_password_carries_no_contacts_and_bad_contact_types_are_named() {
        let set = envelope(
            json!({"fullMethod": "/zitadel.user.v2.UserService/SetPassword",
            "request": {"userId": "1", "newPassword": {"password": "a"}, "email": {"email": "x@y.z"}}}),
        );
        let found = new_password(&set).expect("ok").expect("password");
        assert_eq!(found.contacts, Contacts::default());
        let bad = envelope(
            json!({"fullMethod": "/zitadel.user.v2.UserService/CreateUser",
            "request": {"human": {"password": {"password": "a"}, "phone": {"phone": 41}}}}),
        );
        assert_eq!(
            new_password(&bad).expect_err("bad").field,
            "request.human.phone.phone"
        );
    }
}
