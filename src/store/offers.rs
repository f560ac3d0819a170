//! The connector's offer map, kept in `offer_plans` so that the database's readers see
//! each subscriber's plan (`subscription_traits_with_plan.offer_plan`).

use super::backend::{Backend, Param, Session};
use super::rows::Columns;
use crate::export::Offers;
use crate::store::backend::Store;
use crate::store::error::Result;

impl<B: Backend> Store<B> {
    /// Makes the stored map of the connector's offers the configured one, in one
    /// transaction; `true` when it changed. A map is at most a few hundred offers:
    /// compared whole, and rewritten whole when it differs.
    pub async fn keep_offers(&self, connector: &str, offers: &Offers) -> Result<bool> {
        let wanted: Vec<(&str, &str, &str)> = offers
            .placements()
            .into_iter()
            .map(|(offer, p)| (offer, p.plan.as_str(), p.country.as_str()))
            .collect();
        let mut tx = self.pool.begin().await?;
        let rows = tx
            .fetch_all(B::SQL.offer_plans, &[Param::Text(Some(connector))])
            .await?;
        let mut stored = Vec::with_capacity(rows.len());
        for row in &rows {
            stored.push((
                row.text("offer_id")?,
                row.text("plan")?,
                row.text("country")?,
            ));
        }
        let same = stored
            .iter()
            .map(|(o, p, c)| (o.as_str(), p.as_str(), c.as_str()))
            .eq(wanted.iter().copied());
        if same {
            return Ok(false);
        }
        tx.execute(B::SQL.forget_offer_plans, &[Param::Text(Some(connector))])
            .await?;
        for (offer, plan, country) in wanted {
            tx.execute(
                B::SQL.keep_offer_plan,
                &[
                    Param::Text(Some(connector)),
                    Param::Text(Some(offer)),
                    Param::Text(Some(plan)),
                    Param::Text(Some(country)),
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}
