//! The IVS service model, compiled into a request validator.
//!
//! IVS clients check little before sending (botocore: required members, types and minimums;
//! aws-sdk-rust: required members only), so the server must enforce every constraint of the
//! model itself. Rather than restating ~120 constraints by hand, this module reads the model
//! (`ivs-service-model.json`, botocore 1.44.8's `service-2.json` less its documentation) and
//! checks an operation's input against it: required members, JSON types, string lengths,
//! patterns (as full matches), enum values, numeric ranges, list and map sizes. The failures are
//! reported the way AWS services report them: one `ValidationException` naming every field.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use crate::error::IvsError;

const MODEL_JSON: &str = include_str!("../ivs-service-model.json");

/// Where a member of an operation's input travels on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    Body,
    Uri,
    QueryString,
    Header,
}

/// One operation of the model: its route and what it answers on success.
#[derive(Debug)]
pub struct Operation {
    pub name: String,
    pub method: String,
    pub request_uri: String,
    /// 200, or 204 for operations without output.
    pub success_status: u16,
    pub input_shape: Option<String>,
    pub has_output: bool,
}

#[derive(Debug)]
struct Member {
    name: String,
    shape: String,
    location: Location,
}

#[derive(Debug)]
enum Shape {
    String {
        min: Option<i64>,
        max: Option<i64>,
        pattern: Option<(String, Regex)>,
        enum_values: Option<Vec<String>>,
        sensitive: bool,
    },
    Integer {
        min: Option<i64>,
        max: Option<i64>,
        int32: bool,
    },
    Boolean,
    Timestamp,
    List {
        member: String,
        min: Option<i64>,
        max: Option<i64>,
    },
    Map {
        key: String,
        value: String,
        min: Option<i64>,
        max: Option<i64>,
    },
    Structure {
        members: Vec<Member>,
        required: Vec<String>,
    },
}

/// The compiled service model.
#[derive(Debug)]
pub struct ServiceModel {
    operations: HashMap<String, Operation>,
    shapes: HashMap<String, Shape>,
}

/// The model, compiled on first use.
pub fn model() -> &'static ServiceModel {
    static MODEL: LazyLock<ServiceModel> =
        LazyLock::new(|| ServiceModel::compile(MODEL_JSON).expect("the embedded IVS service model compiles"));
    &MODEL
}

/// Makes a model pattern a full match, fixing the one pattern the model gets wrong: the tag
/// operations' `ResourceArn` writes the resource type as `[a-z-]` (one character), which would
/// reject every real ARN (`channel/…`); IVS evidently means `[a-z-]+`.
fn full_match_pattern(pattern: &str) -> String {
    let fixed = pattern.replace(":[a-z-]/", ":[a-z-]+/");
    format!("^(?:{fixed})$")
}

fn int_field(node: &Value, field: &str) -> Option<i64> {
    node.get(field).and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
}

impl ServiceModel {
    fn compile(json: &str) -> Result<ServiceModel, String> {
        let root: Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let mut shapes = HashMap::new();
        for (name, node) in root["shapes"].as_object().ok_or("model has no shapes")? {
            let kind = node["type"].as_str().unwrap_or("");
            let min = int_field(node, "min");
            let max = int_field(node, "max");
            let shape = match kind {
                "string" => {
                    let pattern = match node.get("pattern").and_then(Value::as_str) {
                        Some(p) => Some((
                            p.to_owned(),
                            Regex::new(&full_match_pattern(p)).map_err(|e| format!("{name}: {e}"))?,
                        )),
                        None => None,
                    };
                    let enum_values = node
                        .get("enum")
                        .and_then(Value::as_array)
                        .map(|values| values.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect());
                    let sensitive = node.get("sensitive").and_then(Value::as_bool).unwrap_or(false);
                    Shape::String { min, max, pattern, enum_values, sensitive }
                }
                "integer" | "long" => Shape::Integer { min, max, int32: kind == "integer" },
                "boolean" => Shape::Boolean,
                "timestamp" => Shape::Timestamp,
                "list" => Shape::List { member: node["member"]["shape"].as_str().unwrap_or("").to_owned(), min, max },
                "map" => Shape::Map {
                    key: node["key"]["shape"].as_str().unwrap_or("").to_owned(),
                    value: node["value"]["shape"].as_str().unwrap_or("").to_owned(),
                    min,
                    max,
                },
                "structure" => {
                    let mut members = Vec::new();
                    for (member_name, member) in node["members"].as_object().into_iter().flatten() {
                        let location = match member.get("location").and_then(Value::as_str) {
                            Some("uri") => Location::Uri,
                            Some("querystring") => Location::QueryString,
                            Some("header") => Location::Header,
                            _ => Location::Body,
                        };
                        members.push(Member {
                            name: member_name.clone(),
                            shape: member["shape"].as_str().unwrap_or("").to_owned(),
                            location,
                        });
                    }
                    let required = node["required"]
                        .as_array()
                        .map(|r| r.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
                        .unwrap_or_default();
                    Shape::Structure { members, required }
                }
                other => return Err(format!("{name}: unknown shape type {other}")),
            };
            shapes.insert(name.clone(), shape);
        }
        let mut operations = HashMap::new();
        for (name, node) in root["operations"].as_object().ok_or("model has no operations")? {
            let http = &node["http"];
            operations.insert(
                name.clone(),
                Operation {
                    name: name.clone(),
                    method: http["method"].as_str().unwrap_or("POST").to_owned(),
                    request_uri: http["requestUri"].as_str().unwrap_or("").to_owned(),
                    success_status: http["responseCode"].as_u64().unwrap_or(200) as u16,
                    input_shape: node["input"]["shape"].as_str().map(str::to_owned),
                    has_output: node.get("output").is_some(),
                },
            );
        }
        Ok(ServiceModel { operations, shapes })
    }

    pub fn operation(&self, name: &str) -> Option<&Operation> {
        self.operations.get(name)
    }

    pub fn operations(&self) -> impl Iterator<Item = &Operation> {
        self.operations.values()
    }

    /// Checks an operation's input (body members, URI labels and query parameters gathered into
    /// one JSON object) against every constraint of the model.
    pub fn validate_input(&self, operation: &str, input: &Value) -> Result<(), IvsError> {
        let op = self
            .operations
            .get(operation)
            .ok_or_else(|| IvsError::validation(format!("Unknown operation {operation}")))?;
        let Some(shape) = &op.input_shape else {
            return Ok(());
        };
        let mut failures = Vec::new();
        if input.is_object() {
            self.check(shape, input, "", &mut failures);
        } else {
            failures.push("Request body must be a JSON object".to_owned());
        }
        match failures.len() {
            0 => Ok(()),
            1 => Err(IvsError::validation(format!("1 validation error detected: {}", failures[0]))),
            n => Err(IvsError::validation(format!("{n} validation errors detected: {}", failures.join("; ")))),
        }
    }

    /// Names the members of a structure shape that travel at `location` (used to bind URI labels
    /// and query parameters).
    pub fn members_at(&self, shape: &str, location: Location) -> Vec<&str> {
        match self.shapes.get(shape) {
            Some(Shape::Structure { members, .. }) => {
                members.iter().filter(|m| m.location == location).map(|m| m.name.as_str()).collect()
            }
            _ => Vec::new(),
        }
    }

    fn check(&self, shape_name: &str, value: &Value, path: &str, failures: &mut Vec<String>) {
        let Some(shape) = self.shapes.get(shape_name) else {
            return;
        };
        let at = if path.is_empty() { "the request".to_owned() } else { format!("'{path}'") };
        let fail = |failures: &mut Vec<String>, shown: &str, constraint: String| {
            failures.push(format!("Value {shown}at {at} failed to satisfy constraint: {constraint}"));
        };
        match shape {
            Shape::String { min, max, pattern, enum_values, sensitive } => {
                let Some(text) = value.as_str() else {
                    return fail(failures, "", "Member must be a string".to_owned());
                };
                let shown = if *sensitive { String::new() } else { format!("'{}' ", shorten(text)) };
                let length = text.chars().count() as i64;
                if let Some(min) = min
                    && length < *min
                {
                    fail(failures, &shown, format!("Member must have length greater than or equal to {min}"));
                }
                if let Some(max) = max
                    && length > *max
                {
                    fail(failures, &shown, format!("Member must have length less than or equal to {max}"));
                }
                if let Some((source, regex)) = pattern
                    && !regex.is_match(text)
                {
                    fail(failures, &shown, format!("Member must satisfy regular expression pattern: {source}"));
                }
                // TranscodePreset: IVS itself reports "" for BASIC and STANDARD channels, so a
                // client that echoes a channel back may send it; it means "no preset".
                if let Some(values) = enum_values
                    && !values.iter().any(|v| v == text)
                    && !(shape_name == "TranscodePreset" && text.is_empty())
                {
                    fail(failures, &shown, format!("Member must satisfy enum value set: [{}]", values.join(", ")));
                }
            }
            Shape::Integer { min, max, int32 } => {
                let Some(number) = value.as_i64() else {
                    let what = if value.is_number() { "an integer" } else { "a number" };
                    return fail(failures, "", format!("Member must be {what}"));
                };
                let shown = format!("'{number}' ");
                if *int32 && i32::try_from(number).is_err() {
                    return fail(failures, &shown, "Member must be a 32-bit integer".to_owned());
                }
                if let Some(min) = min
                    && number < *min
                {
                    fail(failures, &shown, format!("Member must have value greater than or equal to {min}"));
                }
                if let Some(max) = max
                    && number > *max
                {
                    fail(failures, &shown, format!("Member must have value less than or equal to {max}"));
                }
            }
            Shape::Boolean => {
                if !value.is_boolean() {
                    fail(failures, "", "Member must be a boolean".to_owned());
                }
            }
            Shape::Timestamp => {
                if crate::timestamp::parse(value).is_none() {
                    fail(failures, "", "Member must be a timestamp (RFC 3339 or epoch seconds)".to_owned());
                }
            }
            Shape::List { member, min, max } => {
                let Some(items) = value.as_array() else {
                    return fail(failures, "", "Member must be a list".to_owned());
                };
                check_count(items.len(), *min, *max, "length", &at, failures);
                for (index, item) in items.iter().enumerate() {
                    if item.is_null() {
                        failures.push(format!(
                            "Value null at '{path}.{index}' failed to satisfy constraint: Member must not be null"
                        ));
                    } else {
                        self.check(member, item, &format!("{path}.{index}"), failures);
                    }
                }
            }
            Shape::Map { key, value: value_shape, min, max } => {
                let Some(entries) = value.as_object() else {
                    return fail(failures, "", "Member must be a map".to_owned());
                };
                check_count(entries.len(), *min, *max, "number of entries", &at, failures);
                for (entry_key, entry_value) in entries {
                    self.check(key, &Value::String(entry_key.clone()), &format!("{path}.{entry_key}(key)"), failures);
                    self.check(value_shape, entry_value, &format!("{path}.{entry_key}"), failures);
                }
            }
            Shape::Structure { members, required } => {
                let Some(object) = value.as_object() else {
                    return fail(failures, "", "Member must be a structure".to_owned());
                };
                for name in required {
                    if object.get(name).is_none_or(Value::is_null) {
                        let member_path = join(path, name);
                        failures.push(format!(
                            "Value null at '{member_path}' failed to satisfy constraint: Member must not be null"
                        ));
                    }
                }
                for member in members {
                    if let Some(member_value) = object.get(&member.name)
                        && !member_value.is_null()
                    {
                        self.check(&member.shape, member_value, &join(path, &member.name), failures);
                    }
                }
            }
        }
    }
}

fn check_count(count: usize, min: Option<i64>, max: Option<i64>, what: &str, at: &str, failures: &mut Vec<String>) {
    let count = count as i64;
    if let Some(min) = min
        && count < min
    {
        failures.push(format!(
            "Value at {at} failed to satisfy constraint: Member must have {what} greater than or equal to {min}"
        ));
    }
    if let Some(max) = max
        && count > max
    {
        failures.push(format!(
            "Value at {at} failed to satisfy constraint: Member must have {what} less than or equal to {max}"
        ));
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() { name.to_owned() } else { format!("{path}.{name}") }
}

/// Keeps echoed values short: a 1 MB name must not come back in the error message.
fn shorten(text: &str) -> String {
    const LIMIT: usize = 200;
    if text.chars().count() <= LIMIT {
        text.to_owned()
    } else {
        let head: String = text.chars().take(LIMIT).collect();
        format!("{head}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(op: &str, input: Value) -> Result<(), String> {
        model().validate_input(op, &input).map_err(|e| e.message)
    }

    #[test]
    fn every_operation_of_the_model_is_present() {
        assert_eq!(model().operations().count(), 46);
        assert_eq!(model().operation("DeleteChannel").unwrap().success_status, 204);
        assert_eq!(model().operation("UntagResource").unwrap().method, "DELETE");
    }

    #[test]
    fn required_members() {
        let message = check("GetChannel", json!({})).unwrap_err();
        assert!(message.contains("'arn'") && message.contains("must not be null"), "{message}");
    }

    #[test]
    fn patterns_are_full_matches() {
        assert!(check("CreateChannel", json!({"name": "ok-name_1"})).is_ok());
        let message = check("CreateChannel", json!({"name": "bad name"})).unwrap_err();
        assert!(message.contains("'name'") && message.contains("regular expression"), "{message}");
        assert!(check("GetChannel", json!({"arn": "xarn:aws:ivs:us-west-2:1:channel/abc"})).is_err());
        assert!(check("GetChannel", json!({"arn": "arn:aws:ivs:us-west-2:1:channel/abc"})).is_ok());
    }

    #[test]
    fn tag_arn_pattern_accepts_real_arns() {
        let arn = "arn:aws:ivs:us-west-2:123456789012:channel/abcdABCDefgh";
        assert!(check("ListTagsForResource", json!({"resourceArn": arn})).is_ok());
    }

    #[test]
    fn enums_ranges_lengths() {
        let message = check("CreateChannel", json!({"latencyMode": "FAST", "type": "STANDARD"})).unwrap_err();
        assert!(message.contains("'latencyMode'") && message.contains("enum"), "{message}");
        assert!(check("CreateChannel", json!({"preset": ""})).is_ok());
        let message = check("ListChannels", json!({"maxResults": 101})).unwrap_err();
        assert!(message.contains("'maxResults'") && message.contains("less than or equal to 100"), "{message}");
        assert!(check("ListStreamKeys", json!({"channelArn": "arn:aws:ivs:a:1:channel/x", "maxResults": 51})).is_err());
        assert!(check("ListChannels", json!({"maxResults": 1.5})).is_err());
        let long_name = "a".repeat(129);
        assert!(check("CreateChannel", json!({"name": long_name})).is_err());
    }

    #[test]
    fn nested_structures_lists_and_maps() {
        let message =
            check("CreateRecordingConfiguration", json!({"destinationConfiguration": {"s3": {"bucketName": "ab"}}}))
                .unwrap_err();
        assert!(message.contains("'destinationConfiguration.s3.bucketName'"), "{message}");
        let arns: Vec<String> = (0..51).map(|i| format!("arn:aws:ivs:us-west-2:1:channel/c{i}")).collect();
        assert!(check("BatchGetChannel", json!({"arns": arns})).is_err());
        assert!(check("BatchGetChannel", json!({"arns": []})).is_err());
        let tags: serde_json::Map<String, Value> = (0..51).map(|i| (format!("k{i}"), json!("v"))).collect();
        assert!(check("CreateChannel", json!({"tags": tags})).is_err());
        let message = check("CreateChannel", json!({"tags": {"bad\u{0}key": "v"}})).unwrap_err();
        assert!(message.contains("tags"), "{message}");
        assert!(check("CreateChannel", json!({"tags": {"Key Ü": "välue"}})).is_ok());
    }

    #[test]
    fn reports_every_failure_and_hides_sensitive_values() {
        let message = check("PutMetadata", json!({"channelArn": "nope", "metadata": ""})).unwrap_err();
        assert!(message.starts_with("2 validation errors detected"), "{message}");
        assert!(message.contains("'channelArn'") && message.contains("'metadata'"), "{message}");
    }

    #[test]
    fn types_are_checked() {
        assert!(check("CreateChannel", json!({"authorized": "yes"})).is_err());
        assert!(check("CreateChannel", json!({"name": 5})).is_err());
        assert!(
            check(
                "InsertAdBreak",
                json!({"channelArn": "arn:aws:ivs:a:1:channel/x", "durationSeconds": 30, "targetStartAt": "soon"})
            )
            .is_err()
        );
        assert!(check("GetChannel", json!([])).is_err());
        assert!(check("StartViewerSessionRevocation", json!({"channelArn": "arn:aws:ivs:a:1:channel/x", "viewerId": "v", "viewerSessionVersionsLessThanOrEqualTo": 3_000_000_000i64})).is_err());
    }
}
