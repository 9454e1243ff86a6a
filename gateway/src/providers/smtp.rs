//! Email through an SMTP server: lettre's pooled async transport, STARTTLS / implicit TLS / plain,
//! optional authentication and DKIM signing. Replies 5yz are permanent; 4yz, timeouts and connection
//! problems are transient.

use super::classify::{smtp_reply, ErrorClass};
use super::{Accepted, Content, Outgoing, Provider, SendError};
use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm,
    DkimSigningKey,
};
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use reclaim_common::settings::{SmtpSecurity, SmtpSettings};
use std::time::Duration;

pub struct SmtpProvider {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// Right-hand side of our Message-IDs.
    domain: String,
    dkim: Option<DkimConfig>,
}

impl SmtpProvider {
    pub fn new(settings: &SmtpSettings) -> anyhow::Result<Self> {
        let from: Mailbox = settings
            .from
            .parse()
            .map_err(|e| anyhow::anyhow!("gateway.smtp.from = {:?}: {e}", settings.from))?;
        let mut builder = match settings.security {
            SmtpSecurity::Starttls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&settings.host)
                    .map_err(|e| anyhow::anyhow!("gateway.smtp.host: {e}"))?
            }
            SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&settings.host)
                .map_err(|e| anyhow::anyhow!("gateway.smtp.host: {e}"))?,
            SmtpSecurity::None => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host)
            }
        };
        if let Some(tls) = tls_with_ca_file(settings)? {
            builder = builder.tls(tls);
        }
        builder = builder
            .port(settings.port)
            .timeout(Some(Duration::from_millis(settings.timeout_ms)))
            .pool_config(PoolConfig::new().max_size(settings.pool_max_size.max(1)));
        if !settings.username.is_empty() {
            builder = builder.credentials(Credentials::new(
                settings.username.clone(),
                settings.password.expose().to_string(),
            ));
        }
        let dkim = if settings.dkim_key_file.is_empty() {
            None
        } else {
            let pem = std::fs::read_to_string(&settings.dkim_key_file).map_err(|e| {
                anyhow::anyhow!(
                    "gateway.smtp.dkim_key_file = {}: {e}",
                    settings.dkim_key_file
                )
            })?;
            let key = DkimSigningKey::new(&pem, DkimSigningAlgorithm::Rsa).map_err(|e| {
                anyhow::anyhow!(
                    "gateway.smtp.dkim_key_file = {}: not an RSA PKCS#1 PEM key: {e}",
                    settings.dkim_key_file
                )
            })?;
            // Relaxed header canonicalization, not lettre's default "simple": lettre hashes the
            // DKIM-Signature header folded as it was before `b=` was filled in, and folds the final one
            // differently, so under "simple" every signature fails at the receiver (dkimpy says so in
            // gateway_smtp::email_is_dkim_signed_when_a_key_is_configured). "relaxed" unfolds before hashing.
            Some(DkimConfig::new(
                settings.dkim_selector.clone(),
                settings.dkim_domain.clone(),
                key,
                ["From", "Subject", "To", "Date"]
                    .into_iter()
                    .map(HeaderName::new_from_ascii_str)
                    .collect(),
                DkimCanonicalization {
                    header: DkimCanonicalizationType::Relaxed,
                    body: DkimCanonicalizationType::Relaxed,
                },
            ))
        };
        let domain = from.email.domain().to_string();
        Ok(Self {
            transport: builder.build(),
            from,
            domain,
            dkim,
        })
    }

    fn compose(&self, message: &Outgoing) -> Result<Message, SendError> {
        let Content::Email {
            subject,
            text,
            html,
        } = &message.content
        else {
            return Err(SendError::Permanent {
                code: None,
                message: format!("smtp cannot deliver {}", message.channel),
            });
        };
        let to: Mailbox = message.to.parse().map_err(|e| SendError::Permanent {
            code: None,
            message: format!("recipient address refused: {e}"),
        })?;
        let builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject.clone())
            // The same message id across retries lets receivers drop duplicates.
            .message_id(Some(format!("<{}@{}>", message.message_id, self.domain)))
            .header(AutoSubmitted)
            .header(ContentLanguage(message.locale.clone()));
        let plain = SinglePart::builder()
            .header(ContentType::TEXT_PLAIN)
            .body(text.clone());
        let built = match html {
            Some(html) => builder.multipart(
                MultiPart::alternative().singlepart(plain).singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .body(html.clone()),
                ),
            ),
            None => builder.singlepart(plain),
        };
        let mut email = built.map_err(|e| SendError::Permanent {
            code: None,
            message: format!("cannot build the email: {e}"),
        })?;
        if let Some(dkim) = &self.dkim {
            email.sign(dkim);
        }
        Ok(email)
    }
}

#[async_trait::async_trait]
impl Provider for SmtpProvider {
    fn name(&self) -> &'static str {
        "smtp"
    }

    async fn send(&self, message: &Outgoing) -> Result<Accepted, SendError> {
        let email = self.compose(message)?;
        match self.transport.send(email).await {
            // SMTP has no delivery reports to match later; our Message-ID identifies the mail.
            Ok(_) => Ok(Accepted {
                provider_message_id: None,
            }),
            Err(error) => Err(classify(&error)),
        }
    }
}

/// The TLS setup with `ca_file`'s certificates added to the built-in roots, so a server whose certificate a
/// private CA issued is verified rather than refused; `None` keeps lettre's default (no `ca_file`, or no TLS).
fn tls_with_ca_file(settings: &SmtpSettings) -> anyhow::Result<Option<Tls>> {
    if settings.ca_file.is_empty() || settings.security == SmtpSecurity::None {
        return Ok(None);
    }
    let pem = std::fs::read(&settings.ca_file)
        .map_err(|e| anyhow::anyhow!("gateway.smtp.ca_file = {}: {e}", settings.ca_file))?;
    let ca = Certificate::from_pem(&pem).map_err(|e| {
        anyhow::anyhow!(
            "gateway.smtp.ca_file = {}: not a PEM certificate: {e}",
            settings.ca_file
        )
    })?;
    let parameters = TlsParameters::builder(settings.host.clone())
        .add_root_certificate(ca)
        .build()
        .map_err(|e| anyhow::anyhow!("gateway.smtp.ca_file = {}: {e}", settings.ca_file))?;
    Ok(Some(match settings.security {
        SmtpSecurity::Tls => Tls::Wrapper(parameters),
        _ => Tls::Required(parameters),
    }))
}

fn classify(error: &lettre::transport::smtp::Error) -> SendError {
    let code = error.status().map(|c| c.to_string());
    let reply = code.as_deref().and_then(|c| c.parse::<u16>().ok());
    let message = error.to_string();
    match reply.map(smtp_reply) {
        Some(ErrorClass::Permanent) => SendError::Permanent { code, message },
        // 4yz replies, timeouts, refused connections, TLS trouble, broken pools: all worth another try.
        _ => SendError::Transient {
            code: code.or_else(|| error.is_timeout().then(|| "timeout".to_string())),
            message,
            retry_after: None,
        },
    }
}

/// `Auto-Submitted: auto-generated` (RFC 3834): no vacation auto-replies to our notices.
#[derive(Clone)]
struct AutoSubmitted;

impl lettre::message::header::Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".to_string())
    }
}

#[derive(Clone)]
struct ContentLanguage(String);

impl lettre::message::header::Header for ContentLanguage {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Content-Language")
    }

    fn parse(value: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(value.to_string()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}
