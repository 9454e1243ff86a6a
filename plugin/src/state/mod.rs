//! The state of each identity's current password, one `password_states` row per identity.
//!
//! - `store.rs`: the row ([`StateRow`]: history salt, changed/expires, must-change and why, grace logins,
//!   profile, contacts) and its queries (`find`, `find_for_update`, `ensure`, `save`, `erase`).
//! - `transition.rs`: how a row changes inside a write transaction (`change_row`, `apply_change`,
//!   `refresh_identity`), which profile an identity falls under (`resolve_in`), and the facts the policy
//!   engine decides on (`change_facts`, `login_facts`).
//! - `view.rs`: [`PasswordState`], what callers see, computed from a row, its profile and the time.
//!
//! Not here: the history entries (`history`), the decisions (`policy`), and the async facade that runs these
//! on the blocking pool (`passwords`).

mod store;
mod transition;
mod view;

pub use store::{ensure, erase, find, find_for_update, save, StateRow};
pub(crate) use transition::{
    apply_change, change_facts, change_row, login_facts, refresh_identity, resolve_in,
};
pub(crate) use view::view;
pub use view::PasswordState;
