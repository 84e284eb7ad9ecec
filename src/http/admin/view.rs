//! What the admin page shows, gathered from the store and the grant reports and laid out
//! for the templates: every value is already formatted, and every position on the timeline
//! already computed, so the templates only place text (which askama escapes).

use chrono::{DateTime, TimeDelta, Utc};

use crate::app::App;
use crate::report::{self, GrantReport};
use crate::store::alerts::{self, StoredAlert};
use crate::store::sync_runs::{self, RecentRun};

/// At most this many grants are listed, nearest cliff first; the page counts the rest.
pub const GRANTS_LISTED: i64 = 500;
/// At most this many of the listed grants are drawn on the timeline.
pub const TIMELINE_ROWS: usize = 50;
/// At most this many open alerts are listed, newest first.
pub const ALERTS_LISTED: i64 = 200;
/// Sync runs shown per site, newest first.
pub const RUNS_PER_SITE: i64 = 5;
/// At most this many sites have their runs shown.
pub const SITES_LISTED: i64 = 100;

/// Everything the admin page shows.
#[derive(Debug)]
pub struct AdminData {
    /// When the page was drawn (business time).
    pub generated_at: String,
    /// The grants shown, nearest cliff first.
    pub grants: Vec<GrantView>,
    /// How many grants exist in all.
    pub grants_total: i64,
    /// How many grants exist beyond those shown.
    pub grants_hidden: i64,
    /// Every listed grant's deadlines on one time axis.
    pub timeline: Timeline,
    /// Open alerts, newest first.
    pub alerts: Vec<AlertView>,
    /// Open alerts beyond those shown.
    pub alerts_hidden: i64,
    /// The latest sync runs of each site.
    pub sites: Vec<SiteRuns>,
}

/// One grant.
#[derive(Debug)]
pub struct GrantView {
    /// The grant's id, for the re-consent form's action.
    pub id: String,
    /// The invite's label.
    pub label: String,
    /// The Atlassian account id, or `(unidentified)`.
    pub account: String,
    /// The account's display name, when `/me` shared it.
    pub account_name: Option<String>,
    /// `active`, `degraded`, `needs_reauth` or `disabled`.
    pub status: String,
    /// Why the status was set.
    pub reason: Option<String>,
    /// The last refresh failure and how many in a row, when there is one.
    pub last_error: Option<String>,
    /// Every site row of the grant.
    pub sites: Vec<SiteView>,
    /// The granted scopes.
    pub scopes: Vec<String>,
    /// Access expiry, idle deadline, family deadline and re-auth warning, in that order.
    pub deadlines: Vec<DeadlineView>,
    /// "refresh idle deadline in 3d 4h", say: the nearest of the two cliffs.
    pub nearest: String,
    /// `overdue`, `soon` or `later`, for the nearest cliff.
    pub urgency: &'static str,
}

/// One site of a grant.
#[derive(Debug)]
pub struct SiteView {
    /// The site's cloud id.
    pub cloud_id: String,
    /// The site's name.
    pub name: String,
    /// `jira` or `confluence`.
    pub product: String,
    /// `active` or `revoked`.
    pub status: String,
    /// The grant's scopes on the site.
    pub scopes: Vec<String>,
    /// Scopes the product needs that the grant lacks there, and any gateway scope error.
    pub scope_problem: Option<String>,
}

/// One deadline of a grant.
#[derive(Debug)]
pub struct DeadlineView {
    /// What ends or begins.
    pub name: &'static str,
    /// The instant, `YYYY-MM-DD HH:MM UTC`; `-` when there is none.
    pub at: String,
    /// Relative to now: `in 3d 4h`, `2h ago`.
    pub relative: String,
    /// `overdue`, `soon`, `later` or `none`, for styling.
    pub urgency: &'static str,
}

/// The shared time axis: from now to the furthest deadline shown (at least the family
/// lifetime), one lane per grant.
#[derive(Debug)]
pub struct Timeline {
    /// The SVG's height in pixels.
    pub height: u32,
    /// Axis labels.
    pub ticks: Vec<Tick>,
    /// One lane per grant, in list order.
    pub rows: Vec<TimelineRow>,
    /// Listed grants not drawn.
    pub hidden: usize,
}

/// One axis label.
#[derive(Debug)]
pub struct Tick {
    /// Horizontal position, as an SVG percentage.
    pub x: String,
    /// `now`, `+30d`, ...
    pub label: String,
    /// The SVG `text-anchor`.
    pub anchor: &'static str,
}

/// One grant's lane.
#[derive(Debug)]
pub struct TimelineRow {
    /// The label line's baseline.
    pub text_y: u32,
    /// The lane's top.
    pub bar_y: u32,
    /// The label and nearest cliff, in words.
    pub caption: String,
    /// The caption with the account, and every deadline (the lane's SVG title).
    pub title: String,
    /// Where the bar from now to the nearest cliff ends, as an SVG percentage.
    pub bar_width: String,
    /// `overdue`, `soon` or `later`.
    pub urgency: &'static str,
    /// The re-auth warning window (its start to the family deadline).
    pub warn_x: String,
    /// Its width.
    pub warn_width: String,
    /// One tick per deadline.
    pub marks: Vec<Mark>,
}

/// One deadline on a lane.
#[derive(Debug)]
pub struct Mark {
    /// Horizontal position, as an SVG percentage.
    pub x: String,
    /// `access`, `idle` or `family`, for styling.
    pub class: &'static str,
    /// The deadline in words (the SVG title, shown on hover).
    pub title: String,
}

/// One open alert.
#[derive(Debug)]
pub struct AlertView {
    /// The alert kind, e.g. `needs_reauth`.
    pub kind: String,
    /// The grant's label.
    pub label: String,
    /// The site, `cloud id / product`, for a site alert.
    pub site: Option<String>,
    /// What broke.
    pub reason: String,
    /// When the condition began.
    pub since: String,
    /// When it becomes fatal, with the time left.
    pub deadline: String,
    /// `overdue`, `soon`, `later` or `none`.
    pub urgency: &'static str,
}

/// The latest runs of one site.
#[derive(Debug)]
pub struct SiteRuns {
    /// The site's name.
    pub name: String,
    /// The site's cloud id.
    pub cloud_id: String,
    /// `jira` or `confluence`.
    pub product: String,
    /// Newest first.
    pub runs: Vec<RunView>,
}

/// One sync run.
#[derive(Debug)]
pub struct RunView {
    /// `jira_incremental`, `jira_reconcile` or `confluence_spaces`.
    pub kind: String,
    /// `running`, `ok`, `failed` or `deferred`.
    pub outcome: String,
    /// Rows written, in words.
    pub rows: String,
    /// When it finished (or started, while running).
    pub finished: String,
    /// Why it failed or was deferred.
    pub error: Option<String>,
}

/// Gathers the page's data: bounded queries only.
pub async fn gather(app: &App) -> Result<AdminData, sqlx::Error> {
    let now = app.clock.now();
    let (reports, grants_total) = report::nearest_grant_reports(app, GRANTS_LISTED).await?;
    let mut conn = app.pool.acquire().await?;
    let open = alerts::recent_open_alerts(&mut conn, ALERTS_LISTED).await?;
    let open_total = alerts::count_open_alerts(&mut conn).await?;
    let runs = sync_runs::recent_runs_per_site(&mut conn, RUNS_PER_SITE, SITES_LISTED).await?;
    drop(conn);

    let warning = app.config.tokens.reauth_warning;
    let horizon = reports
        .iter()
        .take(TIMELINE_ROWS)
        .map(|r| r.family_deadline.max(r.refresh_idle_deadline) - now)
        .fold(app.config.tokens.absolute_expiry, TimeDelta::max)
        .max(TimeDelta::days(1));
    let timeline = timeline(&reports, now, horizon, warning);
    let shown = i64::try_from(reports.len()).unwrap_or(i64::MAX);
    let alerts_shown = i64::try_from(open.len()).unwrap_or(i64::MAX);
    Ok(AdminData {
        generated_at: instant(now),
        grants: reports
            .iter()
            .map(|r| grant_view(r, now, warning))
            .collect(),
        grants_total,
        grants_hidden: (grants_total - shown).max(0),
        timeline,
        alerts: open.iter().map(|a| alert_view(a, now, warning)).collect(),
        alerts_hidden: (open_total - alerts_shown).max(0),
        sites: site_runs(runs),
    })
}

/// The re-consent link's deadline for a grant: its family deadline once the re-auth warning
/// has begun (so the link outlives it, as the alert's does), otherwise none (the link is
/// valid for `http.invite_ttl`).
pub fn reconsent_deadline(
    family_deadline: DateTime<Utc>,
    now: DateTime<Utc>,
    warning: TimeDelta,
) -> Option<DateTime<Utc>> {
    (family_deadline - warning <= now).then_some(family_deadline)
}

fn grant_view(r: &GrantReport, now: DateTime<Utc>, warning: TimeDelta) -> GrantView {
    let warn_at = r.family_deadline - warning;
    let (cliff_name, cliff) = nearest_cliff(r);
    let deadlines = vec![
        match r.access_expires_at {
            // Routine: refreshed whenever work needs it, so never styled as a cliff.
            Some(at) => DeadlineView {
                urgency: "none",
                ..deadline("access token expires", at, now, warning)
            },
            None => DeadlineView {
                name: "access token expires",
                at: "-".to_owned(),
                relative: "none stored".to_owned(),
                urgency: "none",
            },
        },
        deadline(
            "refresh idle deadline",
            r.refresh_idle_deadline,
            now,
            warning,
        ),
        deadline("family deadline", r.family_deadline, now, warning),
        DeadlineView {
            urgency: if warn_at <= now { "soon" } else { "later" },
            ..deadline("re-auth warning begins", warn_at, now, warning)
        },
    ];
    GrantView {
        id: r.id.to_string(),
        label: r.label.clone(),
        account: account(r),
        account_name: r.account_name.clone(),
        status: r.status.to_string(),
        reason: r.status_reason.clone(),
        last_error: r
            .last_error
            .as_ref()
            .map(|e| format!("{e} ({} failure(s) in a row)", r.failure_streak)),
        sites: r
            .sites
            .iter()
            .map(|s| {
                let mut problems = Vec::new();
                if !s.missing_scopes.is_empty() {
                    problems.push(format!("missing scopes: {}", s.missing_scopes.join(" ")));
                }
                if let Some(e) = &s.scope_error {
                    problems.push(e.clone());
                }
                SiteView {
                    cloud_id: s.cloud_id.to_string(),
                    name: s.name.clone(),
                    product: s.product.to_string(),
                    status: s.status.clone(),
                    scopes: s.scopes.clone(),
                    scope_problem: (!problems.is_empty()).then(|| problems.join("; ")),
                }
            })
            .collect(),
        scopes: r.scopes.clone(),
        deadlines,
        nearest: format!("{cliff_name} {}", relative(cliff, now)),
        urgency: urgency(cliff, now, warning),
    }
}

fn account(r: &GrantReport) -> String {
    r.account_id
        .as_ref()
        .map_or_else(|| "(unidentified)".to_owned(), ToString::to_string)
}

/// The earlier of the two deadlines that end a grant without a new consent.
fn nearest_cliff(r: &GrantReport) -> (&'static str, DateTime<Utc>) {
    if r.refresh_idle_deadline < r.family_deadline {
        ("refresh idle deadline", r.refresh_idle_deadline)
    } else {
        ("family deadline", r.family_deadline)
    }
}

fn deadline(
    name: &'static str,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
    warning: TimeDelta,
) -> DeadlineView {
    DeadlineView {
        name,
        at: instant(at),
        relative: relative(at, now),
        urgency: urgency(at, now, warning),
    }
}

fn urgency(at: DateTime<Utc>, now: DateTime<Utc>, warning: TimeDelta) -> &'static str {
    if at <= now {
        "overdue"
    } else if at - now <= warning {
        "soon"
    } else {
        "later"
    }
}

fn timeline(
    reports: &[GrantReport],
    now: DateTime<Utc>,
    horizon: TimeDelta,
    warning: TimeDelta,
) -> Timeline {
    const AXIS: u32 = 24;
    const LANE: u32 = 40;
    let x = |at: DateTime<Utc>| position(at, now, horizon);
    let mut ticks = vec![Tick {
        x: percent(1.0),
        label: "now".to_owned(),
        anchor: "start",
    }];
    // Labels at least a tenth of the axis apart, so that they stay legible on a phone.
    let mut last = 0.0;
    for days in [30, 90, 180, 270, 365, 545, 730, 1095] {
        let at = now + TimeDelta::days(days);
        let at_fraction = fraction(at, now, horizon);
        if at - now < horizon && at_fraction - last >= 0.1 && 1.0 - at_fraction >= 0.1 {
            last = at_fraction;
            ticks.push(Tick {
                x: x(at),
                label: format!("+{days}d"),
                anchor: "middle",
            });
        }
    }
    ticks.push(Tick {
        x: percent(99.0),
        label: format!("+{}d", horizon.num_days()),
        anchor: "end",
    });
    let rows: Vec<TimelineRow> = reports
        .iter()
        .take(TIMELINE_ROWS)
        .zip(0u32..)
        .map(|(r, i)| {
            let top = AXIS + i * LANE;
            let (cliff_name, cliff) = nearest_cliff(r);
            let warn_at = (r.family_deadline - warning).max(now);
            let mut marks = Vec::new();
            if let Some(at) = r.access_expires_at {
                marks.push(Mark {
                    x: x(at),
                    class: "access",
                    title: format!("access token expires {}", relative(at, now)),
                });
            }
            marks.push(Mark {
                x: x(r.refresh_idle_deadline),
                class: "idle",
                title: format!(
                    "refresh idle deadline {}",
                    relative(r.refresh_idle_deadline, now)
                ),
            });
            marks.push(Mark {
                x: x(r.family_deadline),
                class: "family",
                title: format!("family deadline {}", relative(r.family_deadline, now)),
            });
            TimelineRow {
                text_y: top + 13,
                bar_y: top + 18,
                caption: format!("{} · {cliff_name} {}", r.label, relative(cliff, now)),
                title: format!(
                    "{} ({}): {}",
                    r.label,
                    account(r),
                    marks
                        .iter()
                        .map(|m| m.title.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                bar_width: percent(fraction(cliff, now, horizon) * 98.0),
                urgency: urgency(cliff, now, warning),
                warn_x: x(warn_at),
                warn_width: percent(
                    (fraction(r.family_deadline, now, horizon) - fraction(warn_at, now, horizon))
                        .max(0.0)
                        * 98.0,
                ),
                marks,
            }
        })
        .collect();
    let lanes = u32::try_from(rows.len()).unwrap_or(u32::MAX);
    Timeline {
        height: AXIS + lanes.max(1) * LANE,
        ticks,
        hidden: reports.len().saturating_sub(TIMELINE_ROWS),
        rows,
    }
}

/// Where `at` falls between now (0) and now + `horizon` (1), clamped.
fn fraction(at: DateTime<Utc>, now: DateTime<Utc>, horizon: TimeDelta) -> f64 {
    let span = horizon.num_seconds().max(1) as f64;
    ((at - now).num_seconds() as f64 / span).clamp(0.0, 1.0)
}

/// The SVG x of `at`, leaving 1% on either side.
fn position(at: DateTime<Utc>, now: DateTime<Utc>, horizon: TimeDelta) -> String {
    percent(1.0 + 98.0 * fraction(at, now, horizon))
}

fn percent(value: f64) -> String {
    format!("{value:.2}%")
}

fn alert_view(a: &StoredAlert, now: DateTime<Utc>, warning: TimeDelta) -> AlertView {
    AlertView {
        kind: a.kind.clone(),
        label: a.label.clone(),
        site: a
            .cloud_id
            .as_ref()
            .map(|c| format!("{c} / {}", a.product.as_deref().unwrap_or("-"))),
        reason: a.reason.clone(),
        since: format!("{} ({})", instant(a.since), relative(a.since, now)),
        deadline: a.deadline.map_or_else(
            || "-".to_owned(),
            |d| format!("{} ({})", instant(d), relative(d, now)),
        ),
        urgency: a.deadline.map_or("none", |d| urgency(d, now, warning)),
    }
}

fn site_runs(runs: Vec<RecentRun>) -> Vec<SiteRuns> {
    let mut sites: Vec<SiteRuns> = Vec::new();
    for run in runs {
        let (cloud_id, product) = (run.cloud_id.to_string(), run.product.to_string());
        let view = RunView {
            rows: format!(
                "{} upserted, {} deleted, {} restored",
                run.upserted, run.deleted, run.restored
            ),
            finished: run.finished_at.map_or_else(
                || format!("running since {}", instant(run.started_at)),
                instant,
            ),
            kind: run.kind,
            outcome: run.outcome,
            error: run.error,
        };
        match sites.last_mut() {
            Some(site) if site.cloud_id == cloud_id && site.product == product => {
                site.runs.push(view);
            }
            _ => sites.push(SiteRuns {
                name: run.site_name,
                cloud_id,
                product,
                runs: vec![view],
            }),
        }
    }
    sites
}

fn instant(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// `in 3d 4h`, `in 12m`, `2d 1h ago`.
fn relative(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let span = if at >= now { at - now } else { now - at };
    let (days, hours, minutes) = (
        span.num_days(),
        span.num_hours() % 24,
        span.num_minutes() % 60,
    );
    let text = if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {minutes}m")
    } else {
        format!("{minutes}m")
    };
    if at >= now {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_naturally() {
        #[allow(clippy::disallowed_methods)] // any instant will do in this test
        let now = Utc::now();
        assert_eq!(relative(now + TimeDelta::minutes(90), now), "in 1h 30m");
        assert_eq!(relative(now + TimeDelta::hours(50), now), "in 2d 2h");
        assert_eq!(relative(now - TimeDelta::minutes(5), now), "5m ago");
    }

    #[test]
    fn positions_are_clamped_to_the_axis() {
        #[allow(clippy::disallowed_methods)] // any instant will do in this test
        let now = Utc::now();
        let year = TimeDelta::days(365);
        assert_eq!(position(now - TimeDelta::days(3), now, year), "1.00%");
        assert_eq!(position(now + TimeDelta::days(800), now, year), "99.00%");
        assert_eq!(
            position(now + TimeDelta::days(365) / 2, now, year),
            "50.00%"
        );
    }
}
