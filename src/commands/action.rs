//! `action switch|coupon|reactivate` and `actions`: the billing actions from the command
//! line, and their ledger.

use super::exit;
use super::output::listed_as_json;
use crate::action::{
    ActionAnswer, ActionBody, ActionKind, ActionRequest, ActionStatus, ActionTrigger,
};
use crate::actions::{Actions, Ask};
use crate::cli::{ActionArgs, ActionCommand, ActionCommon, ActionsArgs};
use crate::clock::SystemClock;
use crate::config::{ConfigError, Connector, Settings};
use crate::store::{Backend, Store};
use std::sync::Arc;
use tracing::warn;

pub(super) async fn run(mut settings: Settings, args: &ActionArgs) -> anyhow::Result<u8> {
    let (common, body) = body(&args.action);
    let connector = settings.connector_id(common.target.connector.as_deref());
    if settings.connectors.is_empty() {
        // Without a config file: the default connector, Cleeng's production API.
        settings
            .connectors
            .push(Connector::new(&connector, "", settings.schedule.timezone));
    }
    let request = ActionRequest::new(&connector, body).map_err(|e| ConfigError::Invalid {
        key: format!("action {}", e.field),
        message: e.message,
    })?;
    let opened = crate::store::open(&settings.store_url).await?;
    let answer = crate::with_store!(opened, store => {
        perform(&settings, Arc::new(store), request, common).await?
    });
    if common.json {
        println!("{}", serde_json::to_string(&answer)?);
    } else {
        print_answer(&answer);
    }
    Ok(match answer.status {
        ActionStatus::Succeeded | ActionStatus::DryRun => exit::OK,
        ActionStatus::Refused => exit::REFUSED,
        ActionStatus::Failed | ActionStatus::Unknown | ActionStatus::Pending => exit::FAILED,
    })
}

async fn perform<B: Backend>(
    settings: &Settings,
    store: Arc<Store<B>>,
    request: ActionRequest,
    common: &ActionCommon,
) -> anyhow::Result<ActionAnswer> {
    let actions = recover(settings, store).await?;
    let answer = actions
        .perform(Ask {
            request,
            key: common.idempotency_key.clone(),
            trigger: ActionTrigger::Cli,
            dry_run: common.dry_run,
        })
        .await?;
    // The process ends with the command: the reads that confirm the action are waited
    // for here (bounded by `confirm_reads`).
    Ok(actions.confirm_later(answer).await)
}

/// The actions on this store, once the pending ones of stopped processes are `unknown`:
/// every start that reads or writes the ledger does that first.
async fn recover<B: Backend>(
    settings: &Settings,
    store: Arc<Store<B>>,
) -> anyhow::Result<Actions<B>> {
    let actions = Actions::new(
        &settings.connectors,
        store,
        Arc::new(SystemClock),
        crate::process::instance(),
    );
    let abandoned = actions.recover().await?;
    if abandoned > 0 {
        warn!(
            abandoned,
            "actions left pending by a stopped process are now unknown: see `cleeng-sync actions`"
        );
    }
    Ok(actions)
}

/// The request the arguments make, as the API's body would say it.
fn body(command: &ActionCommand) -> (&ActionCommon, ActionBody) {
    let common = command.common();
    let mut body = ActionBody {
        action: ActionKind::ReactivateSubscription,
        email: String::new(),
        to_offer_id: None,
        to_plan: None,
        direction: None,
        coupon_code: None,
        subscription_id: common.subscription_id,
    };
    match command {
        ActionCommand::Switch(a) => {
            body.action = ActionKind::SwitchSubscription;
            body.email.clone_from(&a.email);
            body.to_offer_id.clone_from(&a.to_offer);
            body.to_plan.clone_from(&a.to_plan);
            body.direction = a.direction;
        }
        ActionCommand::Coupon(a) => {
            body.action = ActionKind::ApplyCoupon;
            body.email.clone_from(&a.email);
            body.coupon_code = Some(a.code.clone());
        }
        ActionCommand::Reactivate(a) => body.email.clone_from(&a.email),
    }
    (common, body)
}

fn print_answer(answer: &ActionAnswer) {
    let id = answer
        .action_id
        .map_or_else(|| "-".to_string(), |id| id.to_string());
    let subscription = answer
        .subscription_id
        .map_or_else(String::new, |s| format!(" subscription {s}"));
    let code = answer
        .code
        .as_deref()
        .map_or_else(String::new, |c| format!(" ({c})"));
    println!(
        "action {id} {} {}{subscription}: {}{code}",
        answer.action.as_str(),
        answer.email,
        answer.status.as_str(),
    );
    if let Some(message) = &answer.message {
        println!("  {message}");
    }
    if let Some(at) = &answer.confirmed_at {
        println!("  confirmed at {at}: Cleeng shows its effect");
    } else if answer.status == ActionStatus::Succeeded && answer.action != ActionKind::ApplyCoupon {
        println!(
            "  not confirmed yet: Cleeng does not show its effect; a later refresh of the \
             subscriber confirms it"
        );
    }
}

pub(super) async fn list(settings: Settings, args: &ActionsArgs) -> anyhow::Result<u8> {
    let opened = crate::store::open(&settings.store_url).await?;
    let connector = args.target.connector.as_deref();
    let email = args.email.as_deref();
    let records = crate::with_store!(opened, store => {
        let store = Arc::new(store);
        recover(&settings, Arc::clone(&store)).await?;
        store.actions(connector, email, args.limit).await?
    });
    if listed_as_json(args.json, &records, "no actions yet")? {
        return Ok(exit::OK);
    }
    for record in &records {
        let a = &record.answer;
        println!(
            "{:>6} {:<12} {:<24} {:<9} {} {} {}{}",
            a.action_id.unwrap_or_default(),
            a.connector,
            a.action.as_str(),
            a.status.as_str(),
            record.requested_at,
            a.email,
            record.params,
            a.code
                .as_deref()
                .map_or_else(String::new, |c| format!(" ({c})")),
        );
        if let Some(message) = &a.message {
            println!("       {message}");
        }
        if let Some(at) = &a.confirmed_at {
            println!("       confirmed at {at}: Cleeng shows its effect");
        }
    }
    Ok(exit::OK)
}
