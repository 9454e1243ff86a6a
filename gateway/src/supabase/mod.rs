//! Supabase Auth's (GoTrue's) send hooks: `POST /hooks/supabase/send-sms` and `/hooks/supabase/send-email`
//! (`GOTRUE_HOOK_SEND_SMS_*`, `GOTRUE_HOOK_SEND_EMAIL_*`). With a hook enabled Supabase sends no SMS or email
//! itself: it hands the code to the hook, and the gateway delivers it with its own templates and providers.
//!
//! `payload` is the body as Supabase sends it (`internal/hooks/v0hooks`); `send` maps it to one outbox
//! message and queues it once per hook invocation (`metadata.uuid`, which stays the same across Supabase's
//! retries while `webhook-id` changes). Authentication (Standard Webhooks signatures,
//! `gateway.supabase.hook_secrets`) and the answers in Supabase's `{"error":{"http_code","message"}}` shape
//! live in `routes::supabase_send`. `plugin_link` tells the plugin of a `password_changed_notification`
//! before the email is queued. See `shared/contracts/supabase/`.

pub mod payload;
pub mod plugin_link;
pub mod send;
