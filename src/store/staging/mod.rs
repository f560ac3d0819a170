//! The staging side of the store: one run's rows on their way in. [`area`] streams the
//! rows into the run's tables and plans and applies the change; [`held`] holds the
//! present subscribers' row hashes and [`gather`] reads them in, or onto disk for
//! [`passes`] (whose rows [`marks`] marks), beside the export when it alone is past
//! the limit ([`beside`]);
//! [`spill`] keeps rows and keys on local disk; [`repeats`] finds the emails that
//! occur more than once; [`newer`] keeps the subscribers a refresh read after the
//! export was written; [`direct`] notes the rows a first load writes into the traits
//! as it reads; [`emails`] where each staged email's rows are, for the repeated-email
//! check; [`cache`] asks for the memory the held hashes and the filter will read, a
//! batch of rows ahead.

pub mod area;
pub mod beside;
mod cache;
pub mod direct;
pub mod emails;
pub mod gather;
pub mod held;
pub mod marks;
pub mod newer;
pub mod passes;
pub mod repeats;
pub mod spill;

pub use area::{Plan, Staging};
pub use held::{MAX_HELD, PASS_HELD};
pub use repeats::MAX_CANDIDATES;
