//! Alertmanager's routing configuration (`--alert.routing-config-file`), for the native router.
//!
//! The file is an Alertmanager configuration (0.25): `route`, `receivers`, `inhibit_rules`, `global`.
//! What the native router can do it does as Alertmanager does; what it cannot do is refused by name, never
//! ignored: receivers other than `webhook_configs`, proxies, time intervals.
//!
//! - Matchers come in both syntaxes: the strings of `matchers:` / `source_matchers:` (parsed as
//!   Alertmanager's `labels.ParseMatchers`: `{a="b", c=~"d"}`, unquoted values, `\"` escapes), and the
//!   older `match:` / `match_re:` maps. Regexes are anchored, as Alertmanager anchors them.
//! - [`Route::matching`] is Alertmanager's `Route.Match`: the deepest matching nodes, siblings tried in
//!   order until one matches without `continue`.
//! - Options are inherited from the parent node (`receiver`, `group_by`, the three timers), with
//!   Alertmanager's defaults at the root (30s, 5m, 4h).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::Duration;

use meridian_core::promfmt::PromDuration;

use super::http::{HttpClient, HttpConfig};
use meridian_core::relabel::is_valid_label_name;
use regex::Regex;
use serde::Deserialize;

/// Alert labels, as Alertmanager's `model.LabelSet`.
pub type LabelSet = BTreeMap<String, String>;

/// A label set from pairs.
pub fn label_set(pairs: &[(&str, &str)]) -> LabelSet {
    pairs
        .iter()
        .map(|&(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A matcher's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MatchType {
    Equal,
    NotEqual,
    Regexp,
    NotRegexp,
}

impl MatchType {
    fn as_str(self) -> &'static str {
        match self {
            MatchType::Equal => "=",
            MatchType::NotEqual => "!=",
            MatchType::Regexp => "=~",
            MatchType::NotRegexp => "!~",
        }
    }
}

/// One label matcher (Alertmanager's `labels.Matcher`).
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchType,
    pub value: String,
    re: Option<Regex>,
}

impl Matcher {
    pub fn new(op: MatchType, name: &str, value: &str) -> Result<Matcher, String> {
        let re = match op {
            MatchType::Regexp | MatchType::NotRegexp => Some(
                meridian_core::matcher::translate_go_regex(value)
                    .and_then(|t| Regex::new(&format!("^(?:{t})$")).map_err(|e| e.to_string()))
                    .map_err(|e| format!("invalid regular expression {value:?}: {e}"))?,
            ),
            _ => None,
        };
        Ok(Matcher {
            name: name.to_owned(),
            op,
            value: value.to_owned(),
            re,
        })
    }

    /// Whether `value` (the label's value, empty when absent) matches.
    pub fn matches(&self, value: &str) -> bool {
        match (self.op, &self.re) {
            (MatchType::Equal, _) => value == self.value,
            (MatchType::NotEqual, _) => value != self.value,
            (MatchType::Regexp, Some(re)) => re.is_match(value),
            (MatchType::NotRegexp, Some(re)) => !re.is_match(value),
            _ => false,
        }
    }
}

impl fmt::Display for Matcher {
    /// Alertmanager's `Matcher.String()`: the value always quoted, OpenMetrics escapes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let escaped = self
            .value
            .replace('\\', r"\\")
            .replace('\n', r"\n")
            .replace('"', "\\\"");
        write!(f, "{}{}\"{escaped}\"", self.name, self.op.as_str())
    }
}

/// Matchers that must all match.
#[derive(Debug, Clone, Default)]
pub struct Matchers(pub Vec<Matcher>);

impl Matchers {
    pub fn matches(&self, labels: &LabelSet) -> bool {
        self.0
            .iter()
            .all(|m| m.matches(labels.get(&m.name).map_or("", String::as_str)))
    }

    /// Alertmanager's order (`labels.Matchers.Less`): name, then value, then operator.
    fn sort(&mut self) {
        self.0.sort_by(|a, b| {
            (a.name.as_str(), a.value.as_str(), a.op).cmp(&(
                b.name.as_str(),
                b.value.as_str(),
                b.op,
            ))
        });
    }
}

impl fmt::Display for Matchers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, m) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{m}")?;
        }
        f.write_str("}")
    }
}

/// Alertmanager's `labels.ParseMatchers`: one string holding one or more comma-separated matchers,
/// optionally in braces.
pub fn parse_matchers(s: &str) -> Result<Vec<Matcher>, String> {
    let s = s.strip_prefix('{').unwrap_or(s);
    let s = s.strip_suffix('}').unwrap_or(s);
    let mut tokens = Vec::new();
    let mut token = String::new();
    let (mut inside_quotes, mut escaped) = (false, false);
    for c in s.chars() {
        match c {
            ',' if !inside_quotes => {
                tokens.push(std::mem::take(&mut token));
                continue;
            }
            ',' => {}
            '"' => {
                if escaped {
                    escaped = false;
                } else {
                    inside_quotes = !inside_quotes;
                }
            }
            '\\' => escaped = !escaped,
            _ => escaped = false,
        }
        token.push(c);
    }
    if !token.trim().is_empty() {
        tokens.push(token.trim().to_owned());
    }
    tokens.iter().map(|t| parse_matcher(t)).collect()
}

/// Alertmanager's `labels.ParseMatcher`: `name op value`, the value quoted or not.
pub fn parse_matcher(s: &str) -> Result<Matcher, String> {
    let bad = || format!("bad matcher format: {s}");
    let t = s.trim_start();
    let name_len = t
        .char_indices()
        .find(|&(i, c)| {
            !(c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit()))
        })
        .map_or(t.len(), |(i, _)| i);
    if name_len == 0 {
        return Err(bad());
    }
    let name = &t[..name_len];
    let rest = t[name_len..].trim_start();
    let (op, rest) = [
        ("=~", MatchType::Regexp),
        ("=", MatchType::Equal),
        ("!=", MatchType::NotEqual),
        ("!~", MatchType::NotRegexp),
    ]
    .iter()
    .find_map(|(p, op)| rest.strip_prefix(p).map(|r| (*op, r)))
    .ok_or_else(bad)?;
    let raw = rest.trim();
    let (raw, mut expect_trailing_quote) = match raw.strip_prefix('"') {
        Some(r) => (r, true),
        None => (raw, false),
    };
    let mut value = String::with_capacity(raw.len());
    let mut escaped = false;
    let unescaped_quote = || {
        format!(
            "matcher value contains unescaped double quote: {}",
            rest.trim()
        )
    };
    for (i, c) in raw.char_indices() {
        let last = i + c.len_utf8() == raw.len();
        if escaped {
            escaped = false;
            match c {
                'n' => value.push('\n'),
                '"' | '\\' => value.push(c),
                // A spurious escape: the backslash is literal.
                _ => {
                    value.push('\\');
                    value.push(c);
                }
            }
            continue;
        }
        match c {
            '\\' if !last => escaped = true,
            '"' => {
                if !expect_trailing_quote || !last {
                    return Err(unescaped_quote());
                }
                expect_trailing_quote = false;
            }
            _ => value.push(c),
        }
    }
    if expect_trailing_quote {
        return Err(unescaped_quote());
    }
    Matcher::new(op, name, &value)
}

// ---- the file ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// Checked; nothing in it concerns webhooks.
    #[serde(default)]
    #[allow(dead_code)]
    global: Option<RawGlobal>,
    route: Option<RawRoute>,
    #[serde(default)]
    receivers: Vec<RawReceiver>,
    #[serde(default)]
    inhibit_rules: Vec<RawInhibitRule>,
    /// Go templates for the notification texts of other integrations; webhook payloads use none.
    #[serde(default)]
    templates: Vec<String>,
    #[serde(default)]
    time_intervals: Option<serde_json::Value>,
    #[serde(default)]
    mute_time_intervals: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGlobal {
    /// Alertmanager's default `endsAt` for alerts that come without one; the rule evaluator always sets
    /// it, so the value is checked and otherwise unused.
    #[allow(dead_code)]
    resolve_timeout: Option<PromDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    receiver: Option<String>,
    group_by: Option<Vec<String>>,
    #[serde(default, rename = "match")]
    match_eq: BTreeMap<String, String>,
    #[serde(default)]
    match_re: BTreeMap<String, String>,
    #[serde(default)]
    matchers: Vec<String>,
    #[serde(default)]
    mute_time_intervals: Vec<String>,
    #[serde(default)]
    active_time_intervals: Vec<String>,
    #[serde(default, rename = "continue")]
    cont: bool,
    #[serde(default)]
    routes: Vec<RawRoute>,
    group_wait: Option<PromDuration>,
    group_interval: Option<PromDuration>,
    repeat_interval: Option<PromDuration>,
}

/// Every receiver integration Alertmanager 0.25 knows; only `webhook_configs` is native.
const OTHER_INTEGRATIONS: [&str; 11] = [
    "discord_configs",
    "email_configs",
    "pagerduty_configs",
    "slack_configs",
    "opsgenie_configs",
    "wechat_configs",
    "pushover_configs",
    "victorops_configs",
    "sns_configs",
    "telegram_configs",
    "webex_configs",
];

#[derive(Debug, Deserialize)]
struct RawReceiver {
    name: Option<String>,
    #[serde(default)]
    webhook_configs: Vec<RawWebhook>,
    /// The other integrations, to refuse them by name.
    #[serde(flatten)]
    others: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: Option<String>,
    #[serde(default = "yes")]
    send_resolved: bool,
    #[serde(default)]
    max_alerts: u64,
    #[serde(default)]
    http_config: HttpConfig,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInhibitRule {
    #[serde(default)]
    source_match: BTreeMap<String, String>,
    #[serde(default)]
    source_match_re: BTreeMap<String, String>,
    #[serde(default)]
    source_matchers: Vec<String>,
    #[serde(default)]
    target_match: BTreeMap<String, String>,
    #[serde(default)]
    target_match_re: BTreeMap<String, String>,
    #[serde(default)]
    target_matchers: Vec<String>,
    #[serde(default)]
    equal: Vec<String>,
}

// ---- the checked configuration ----

/// A routing configuration, checked.
#[derive(Debug, Clone)]
pub struct RoutingConfig {
    pub route: Route,
    pub receivers: Vec<Receiver>,
    pub inhibit_rules: Vec<InhibitRule>,
}

/// A node of the routing tree, with its options resolved (inherited from its parent where unset).
#[derive(Debug, Clone)]
pub struct Route {
    pub receiver: String,
    /// Sorted group_by label names (ignored when `group_by_all`).
    pub group_by: Vec<String>,
    /// `group_by: ['...']`: every label.
    pub group_by_all: bool,
    pub group_wait: Duration,
    pub group_interval: Duration,
    pub repeat_interval: Duration,
    pub matchers: Matchers,
    pub cont: bool,
    pub routes: Vec<Route>,
    /// Alertmanager's `Route.Key()`: the matchers of every node from the root, joined by `/`.
    pub key: String,
    /// Depth-first position in the tree (the root is 0), to key aggregation groups.
    pub id: usize,
}

impl Route {
    /// Alertmanager's `Route.Match`: the nodes that take an alert with these labels.
    pub fn matching(&self, labels: &LabelSet) -> Vec<&Route> {
        if !self.matchers.matches(labels) {
            return Vec::new();
        }
        let mut all = Vec::new();
        for child in &self.routes {
            let found = child.matching(labels);
            let matched = !found.is_empty();
            all.extend(found);
            if matched && !child.cont {
                break;
            }
        }
        if all.is_empty() {
            all.push(self);
        }
        all
    }

    /// The receiver names of [`Route::matching`] (what `amtool config routes test` prints, comma-joined).
    pub fn receivers_for(&self, labels: &LabelSet) -> Vec<String> {
        self.matching(labels)
            .into_iter()
            .map(|r| r.receiver.clone())
            .collect()
    }

    /// The alert's labels that form its group on this route.
    pub fn group_labels(&self, labels: &LabelSet) -> LabelSet {
        labels
            .iter()
            .filter(|(k, _)| self.group_by_all || self.group_by.binary_search(k).is_ok())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// A receiver: a name and its webhooks (none makes it a sink that notifies nobody, as in Alertmanager).
#[derive(Debug, Clone)]
pub struct Receiver {
    pub name: String,
    pub webhooks: Vec<Webhook>,
}

/// One `webhook_configs` entry.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub url: String,
    /// `http_config`: TLS and authentication.
    pub http: HttpClient,
    pub send_resolved: bool,
    /// 0: no limit.
    pub max_alerts: u64,
}

/// One `inhibit_rules` entry.
#[derive(Debug, Clone)]
pub struct InhibitRule {
    pub source: Matchers,
    pub target: Matchers,
    pub equal: Vec<String>,
}

/// A routing configuration that could not be used; the message names the field.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct RoutingConfigError {
    pub path: String,
    pub message: String,
}

/// Reads and checks a routing configuration file.
pub fn load(path: &std::path::Path) -> Result<RoutingConfig, RoutingConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| RoutingConfigError {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    parse(&text).map_err(|message| RoutingConfigError {
        path: path.display().to_string(),
        message,
    })
}

/// Parses and checks a routing configuration (Alertmanager 0.25's checks, plus the native router's
/// limits).
pub fn parse(text: &str) -> Result<RoutingConfig, String> {
    let raw: RawConfig = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
    if raw.time_intervals.is_some() || raw.mute_time_intervals.is_some() {
        return Err(
            "time_intervals / mute_time_intervals are not supported by the native router".into(),
        );
    }
    if !raw.templates.is_empty() {
        tracing::info!("routing config: templates are not used by webhook receivers");
    }

    let mut receivers = Vec::new();
    let mut names = HashSet::new();
    for (i, r) in raw.receivers.into_iter().enumerate() {
        let at = format!("receivers[{i}]");
        let name = r
            .name
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("{at}: missing name in receiver"))?;
        let at = format!("receivers[{i}] ({name:?})");
        if let Some(key) = r.others.keys().next() {
            return Err(if OTHER_INTEGRATIONS.contains(&key.as_str()) {
                format!(
                    "{at}: {key} are not supported by the native router (webhook_configs only); \
                     send to an Alertmanager with --alertmanagers.url for them"
                )
            } else {
                format!("{at}: unknown field {key:?}")
            });
        }
        if !names.insert(name.clone()) {
            return Err(format!("notification config name {name:?} is not unique"));
        }
        let mut webhooks = Vec::new();
        for (j, w) in r.webhook_configs.into_iter().enumerate() {
            let at = format!("{at}.webhook_configs[{j}]");
            let url = w
                .url
                .ok_or_else(|| format!("{at}: missing URL in webhook config"))?;
            let uri: http::Uri = url.parse().map_err(|e| format!("{at}.url {url:?}: {e}"))?;
            let https = match uri.scheme_str() {
                Some("http") => false,
                Some("https") => true,
                _ => return Err(format!("{at}.url {url:?}: scheme required for webhook url")),
            };
            if uri.host().is_none_or(str::is_empty) {
                return Err(format!("{at}.url {url:?}: missing host for URL"));
            }
            let http = HttpClient::new(w.http_config, https)
                .map_err(|e| format!("{at}.http_config: {e}"))?;
            webhooks.push(Webhook {
                url,
                http,
                send_resolved: w.send_resolved,
                max_alerts: w.max_alerts,
            });
        }
        receivers.push(Receiver { name, webhooks });
    }

    let root = raw.route.ok_or("no routes provided")?;
    if root.receiver.as_deref().is_none_or(str::is_empty) {
        return Err("route: root route must specify a default receiver".into());
    }
    if !root.match_eq.is_empty() || !root.match_re.is_empty() || !root.matchers.is_empty() {
        return Err("route: root route must not have any matchers".into());
    }
    if root.cont {
        return Err("route: cannot have continue in root route".into());
    }
    let defaults = Route {
        receiver: String::new(),
        group_by: Vec::new(),
        group_by_all: false,
        group_wait: Duration::from_secs(30),
        group_interval: Duration::from_secs(300),
        repeat_interval: Duration::from_secs(4 * 3600),
        matchers: Matchers::default(),
        cont: false,
        routes: Vec::new(),
        key: String::new(),
        id: 0,
    };
    let mut next_id = 0;
    let route = build_route(root, &defaults, None, "route", &mut next_id, &names)?;

    let inhibit_rules = raw
        .inhibit_rules
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let at = format!("inhibit_rules[{i}]");
            if let Some(l) = r.equal.iter().find(|l| !is_valid_label_name(l)) {
                return Err(format!("{at}.equal: invalid label name {l:?}"));
            }
            Ok(InhibitRule {
                source: matchers_of(
                    &r.source_match,
                    &r.source_match_re,
                    &r.source_matchers,
                    &format!("{at}.source"),
                )?,
                target: matchers_of(
                    &r.target_match,
                    &r.target_match_re,
                    &r.target_matchers,
                    &format!("{at}.target"),
                )?,
                equal: r.equal,
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(RoutingConfig {
        route,
        receivers,
        inhibit_rules,
    })
}

/// The matchers of `match`, `match_re` and `matchers` together, in Alertmanager's order.
fn matchers_of(
    eq: &BTreeMap<String, String>,
    re: &BTreeMap<String, String>,
    strings: &[String],
    at: &str,
) -> Result<Matchers, String> {
    let mut out = Vec::new();
    for (name, value) in eq {
        if !is_valid_label_name(name) {
            return Err(format!("{at}_match: invalid label name {name:?}"));
        }
        out.push(Matcher::new(MatchType::Equal, name, value)?);
    }
    for (name, value) in re {
        if !is_valid_label_name(name) {
            return Err(format!("{at}_match_re: invalid label name {name:?}"));
        }
        out.push(
            Matcher::new(MatchType::Regexp, name, value)
                .map_err(|e| format!("{at}_match_re.{name}: {e}"))?,
        );
    }
    for s in strings {
        out.extend(parse_matchers(s).map_err(|e| format!("{at}_matchers: {s:?}: {e}"))?);
    }
    let mut m = Matchers(out);
    m.sort();
    Ok(m)
}

fn build_route(
    raw: RawRoute,
    parent: &Route,
    parent_key: Option<&str>,
    at: &str,
    next_id: &mut usize,
    receivers: &HashSet<String>,
) -> Result<Route, String> {
    if !raw.mute_time_intervals.is_empty() || !raw.active_time_intervals.is_empty() {
        return Err(format!(
            "{at}: mute_time_intervals / active_time_intervals are not supported by the native router"
        ));
    }
    let mut matchers = Vec::new();
    for (name, value) in &raw.match_eq {
        if !is_valid_label_name(name) {
            return Err(format!("{at}.match: invalid label name {name:?}"));
        }
        matchers.push(Matcher::new(MatchType::Equal, name, value)?);
    }
    for (name, value) in &raw.match_re {
        if !is_valid_label_name(name) {
            return Err(format!("{at}.match_re: invalid label name {name:?}"));
        }
        matchers.push(
            Matcher::new(MatchType::Regexp, name, value)
                .map_err(|e| format!("{at}.match_re.{name}: {e}"))?,
        );
    }
    for s in &raw.matchers {
        matchers.extend(parse_matchers(s).map_err(|e| format!("{at}.matchers: {e}"))?);
    }
    let mut matchers = Matchers(matchers);
    matchers.sort();

    let mut r = Route {
        receiver: parent.receiver.clone(),
        group_by: parent.group_by.clone(),
        group_by_all: parent.group_by_all,
        group_wait: parent.group_wait,
        group_interval: parent.group_interval,
        repeat_interval: parent.repeat_interval,
        key: match parent_key {
            Some(k) => format!("{k}/{matchers}"),
            None => matchers.to_string(),
        },
        matchers,
        cont: raw.cont,
        routes: Vec::new(),
        id: *next_id,
    };
    *next_id += 1;
    if let Some(receiver) = raw.receiver.filter(|s| !s.is_empty()) {
        if !receivers.contains(&receiver) {
            return Err(format!(
                "{at}: undefined receiver {receiver:?} used in route"
            ));
        }
        r.receiver = receiver;
    }
    if let Some(group_by) = raw.group_by {
        let all = group_by.iter().any(|l| l == "...");
        let mut names = Vec::new();
        for l in group_by.iter().filter(|l| *l != "...") {
            if !is_valid_label_name(l) {
                return Err(format!(
                    "{at}.group_by: invalid label name {l:?} in group_by list"
                ));
            }
            if names.contains(l) {
                return Err(format!("{at}.group_by: duplicated label {l:?} in group_by"));
            }
            names.push(l.clone());
        }
        if all && !names.is_empty() {
            return Err(format!(
                "{at}.group_by: cannot have wildcard group_by (`...`) and other other labels at the same time"
            ));
        }
        // As Alertmanager: a list of names replaces the parent's; `...` turns grouping by all on; an
        // empty list inherits.
        if !names.is_empty() {
            names.sort();
            r.group_by = names;
            r.group_by_all = false;
        } else if all {
            r.group_by_all = true;
        }
    }
    if let Some(d) = raw.group_wait {
        r.group_wait = d.0;
    }
    if let Some(d) = raw.group_interval {
        if d.0.is_zero() {
            return Err(format!(
                "{at}.group_interval: group_interval cannot be zero"
            ));
        }
        r.group_interval = d.0;
    }
    if let Some(d) = raw.repeat_interval {
        if d.0.is_zero() {
            return Err(format!(
                "{at}.repeat_interval: repeat_interval cannot be zero"
            ));
        }
        r.repeat_interval = d.0;
    }
    let key = r.key.clone();
    for (i, child) in raw.routes.into_iter().enumerate() {
        let child = build_route(
            child,
            &r,
            Some(&key),
            &format!("{at}.routes[{i}]"),
            next_id,
            receivers,
        )?;
        r.routes.push(child);
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::label_set as ls;

    #[test]
    fn parses_matchers_as_alertmanager() {
        let m = parse_matchers(r#"{foo="bar", baz=~"a|b",qux!=x y , q!~"\"q\",z"}"#).unwrap();
        let shown: Vec<String> = m.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                r#"foo="bar""#,
                r#"baz=~"a|b""#,
                r#"qux!="x y""#,
                r#"q!~"\"q\",z""#
            ]
        );
        assert!(m[1].matches("a") && !m[1].matches("ab"), "anchored regex");
        assert!(parse_matcher("1a=b").is_err());
        assert!(
            parse_matcher(r#"a="b"c""#)
                .unwrap_err()
                .contains("unescaped double quote")
        );
        assert!(parse_matcher(r#"a="b"#).is_err());
        assert_eq!(parse_matcher(r"a=b\").unwrap().value, r"b\");
        assert_eq!(parse_matcher(r#"a="x\ny\d""#).unwrap().value, "x\ny\\d");
        assert!(
            parse_matcher("a=~(")
                .unwrap_err()
                .contains("regular expression")
        );
    }

    #[test]
    fn tree_inherits_and_matches_like_alertmanager() {
        let cfg = parse(
            r#"
route:
  receiver: default
  group_by: [alertname]
  group_wait: 10s
  routes:
    - matchers: ['severity="critical"']
      receiver: pager
      continue: true
      group_by: ['...']
    - match: {team: db}
      receiver: db
      repeat_interval: 1h
      routes:
        - match_re: {env: "prod|staging"}
receivers: [{name: default}, {name: pager}, {name: db}]
"#,
        )
        .unwrap();
        let r = &cfg.route;
        assert_eq!(r.receivers_for(&ls(&[("a", "b")])), ["default"]);
        assert_eq!(
            r.receivers_for(&ls(&[("severity", "critical"), ("team", "db")])),
            ["pager", "db"]
        );
        let db = &r.routes[1];
        let leaf = &db.routes[0];
        assert_eq!(leaf.receiver, "db");
        assert_eq!(leaf.group_wait, Duration::from_secs(10));
        assert_eq!(leaf.repeat_interval, Duration::from_secs(3600));
        assert_eq!(leaf.group_interval, Duration::from_secs(300));
        assert_eq!(leaf.key, r#"{}/{team="db"}/{env=~"prod|staging"}"#);
        assert!(r.routes[0].group_by_all && !leaf.group_by_all);
        assert_eq!(
            leaf.group_labels(&ls(&[("alertname", "X"), ("env", "prod")])),
            ls(&[("alertname", "X")])
        );
    }

    #[test]
    fn refuses_what_it_cannot_do_by_name() {
        let base = "route: {receiver: a}\nreceivers:\n";
        for (rest, want) in [
            (
                "  - name: a\n    slack_configs: [{}]\n",
                "slack_configs are not supported",
            ),
            (
                "  - name: a\n    webhook_configs: [{url: 'http://x/', http_config: {proxy_url: 'http://p'}}]\n",
                "http_config: proxy_url",
            ),
            (
                "  - name: a\n    webhook_configs: [{url: 'https://x/', http_config: {tls_config: {ca_file: /nonexistent/ca.pem}}}]\n",
                "tls_config.ca_file",
            ),
            ("  - name: a\n    webhook_configs: [{}]\n", "missing URL"),
            ("  - name: a\n  - name: a\n", "not unique"),
            ("  - name: b\n", "undefined receiver \"a\""),
            ("  - name: a\n    bogus: 1\n", "unknown field \"bogus\""),
        ] {
            let err = parse(&format!("{base}{rest}")).unwrap_err();
            assert!(err.contains(want), "{rest}: {err}");
        }
        let err =
            parse("route: {receiver: a, matchers: ['x=y']}\nreceivers: [{name: a}]").unwrap_err();
        assert!(
            err.contains("root route must not have any matchers"),
            "{err}"
        );
        let err = parse("route: {receiver: a, group_by: ['...', x]}\nreceivers: [{name: a}]")
            .unwrap_err();
        assert!(err.contains("wildcard"), "{err}");
    }
}
