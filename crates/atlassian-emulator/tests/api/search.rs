//! Search paging quirks, per-user project visibility, moved issues, `GET /field` and field
//! selection, NUL characters, project restrictions in JQL, per-tenant quotas and their headers.

use std::collections::BTreeSet;

use atlassian_emulator::{
    EmulatorConfig, GenerateOptions, IssueChange, NewUser, Product, SearchPaging,
};
use chrono::TimeDelta;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::products::{
    ALL_SCOPES, Env, ISSUE_404, OpenApi, assert_fields_valid, assert_valid, header, ids, instant,
    json_of, start, start_with,
};

/// Follows `nextPageToken` to the end; returns every page body.
async fn scan(env: &Env, token: &str, mut body: Value) -> Vec<Value> {
    let mut pages = Vec::new();
    loop {
        let response = env.search(token, body.clone()).await;
        assert_eq!(response.status(), StatusCode::OK);
        let page = json_of(response).await;
        pages.push(page.clone());
        assert!(pages.len() < 100, "runaway scan");
        if page["isLast"] == json!(true) {
            assert!(page.get("nextPageToken").is_none(), "{page}");
            return pages;
        }
        assert_eq!(page["isLast"], json!(false), "{page}");
        body["nextPageToken"] = page["nextPageToken"].clone();
        assert!(body["nextPageToken"].is_string(), "{page}");
    }
}

fn sizes(pages: &[Value]) -> Vec<usize> {
    pages
        .iter()
        .map(|p| p["issues"].as_array().expect("issues").len())
        .collect()
}

fn all_ids(pages: &[Value]) -> Vec<String> {
    pages.iter().flat_map(ids).collect()
}

async fn count(env: &Env, token: &str, jql: &str) -> Value {
    let response = env
        .post(
            env.jira("search/approximate-count"),
            token,
            &json!({"jql": jql}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK, "{jql}");
    json_of(response).await
}

async fn bulkfetch(env: &Env, token: &str, wanted: &[String]) -> Vec<String> {
    let response = env
        .post(
            env.jira("issue/bulkfetch"),
            token,
            &json!({"issueIdsOrKeys": wanted, "fields": ["summary"]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = json_of(response).await;
    assert_eq!(body["issueErrors"], json!([]));
    ids(&body)
}

// ----- 1. sparse and empty pages ---------------------------------------------------------------

#[tokio::test]
async fn sparse_pages_and_empty_pages_with_a_token_end_only_on_the_real_last_page() {
    let env = start().await;
    let created = env.emu.create_issues(&env.site, "ENG", 23);
    env.emu.create_issues(&env.site, "OPS", 20);
    let token = env.token(&env.mia, ALL_SCOPES).await;
    env.emu.set_search_paging(SearchPaging {
        page_cap: Some(5),
        empty_page_every: Some(3),
    });
    let jql = "project = ENG ORDER BY id ASC";
    let pages = scan(&env, &token, json!({"jql": jql, "maxResults": 50})).await;
    assert_eq!(sizes(&pages), vec![5, 5, 0, 5, 5, 0, 3]);
    for empty in [&pages[2], &pages[5]] {
        assert_eq!(empty["isLast"], json!(false));
        assert!(empty["nextPageToken"].is_string());
    }
    assert_eq!(all_ids(&pages), created, "nothing lost or repeated");

    // Exact fit: the page after the last full one is the real last page, even when empty
    // pages are on.
    let pages = scan(
        &env,
        &token,
        json!({"jql": "project = OPS ORDER BY id", "maxResults": 50}),
    )
    .await;
    assert_eq!(sizes(&pages), vec![5, 5, 0, 5, 5]);

    // Only a cap: pages smaller than maxResults, fields or not.
    env.emu.set_search_paging(SearchPaging {
        page_cap: Some(7),
        empty_page_every: None,
    });
    let pages = scan(
        &env,
        &token,
        json!({"jql": jql, "maxResults": 10, "fields": ["summary"]}),
    )
    .await;
    assert_eq!(sizes(&pages), vec![7, 7, 7, 2]);

    // The control API sets the same thing; the default is full pages.
    let response = env
        .http
        .put(env.url("_emulator/search-paging"))
        .json(&json!({"page_cap": null, "empty_page_every": 2}))
        .send()
        .await
        .expect("control");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let pages = scan(&env, &token, json!({"jql": jql, "maxResults": 10})).await;
    assert_eq!(sizes(&pages), vec![10, 0, 10, 0, 3]);
    env.emu.set_search_paging(SearchPaging::default());
    let pages = scan(&env, &token, json!({"jql": jql, "maxResults": 10})).await;
    assert_eq!(sizes(&pages), vec![10, 10, 3]);
}

// ----- 2. visibility, moves and old issues -------------------------------------------------------

#[tokio::test]
async fn invisible_projects_are_left_out_everywhere_for_that_user_only() {
    let env = start().await;
    let eng = env.emu.create_issues(&env.site, "ENG", 5);
    let ops = env.emu.create_issues(&env.site, "OPS", 4);
    env.emu
        .set_project_visibility(&env.site, "OPS", &env.mia, false)
        .expect("known site and user");
    let mia = env.token(&env.mia, ALL_SCOPES).await;
    let sam = env.token(&env.sam, ALL_SCOPES).await;
    let jql = "project in (ENG, OPS) ORDER BY id";

    let pages = scan(&env, &mia, json!({"jql": jql, "maxResults": 3})).await;
    assert_eq!(all_ids(&pages), eng, "OPS is silently omitted for Mia");
    let pages = scan(&env, &sam, json!({"jql": jql})).await;
    assert_eq!(all_ids(&pages).len(), 9, "Sam still sees everything");
    // Naming the hidden project is not an error: its issues are just not there.
    let page = json_of(env.search(&mia, json!({"jql": "project = OPS"})).await).await;
    assert_eq!(page["issues"], json!([]));
    assert_eq!(page["isLast"], json!(true));

    assert_eq!(count(&env, &mia, jql).await, json!({"count": 5}));
    assert_eq!(count(&env, &sam, jql).await, json!({"count": 9}));

    let wanted = vec![ops[0].clone(), eng[1].clone(), "OPS-2".to_owned()];
    assert_eq!(bulkfetch(&env, &mia, &wanted).await, vec![eng[1].clone()]);
    assert_eq!(bulkfetch(&env, &sam, &wanted).await.len(), 3);

    for hidden in [ops[0].as_str(), "OPS-2"] {
        let response = env.get(env.jira(&format!("issue/{hidden}")), &mia).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.text().await.expect("body"), ISSUE_404);
        let response = env.get(env.jira(&format!("issue/{hidden}")), &sam).await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    // The control API toggles it back.
    let response = env
        .http
        .put(env.url(&format!(
            "_emulator/sites/{}/projects/OPS/visibility",
            env.site
        )))
        .json(&json!({"account_id": env.mia, "visible": true}))
        .send()
        .await
        .expect("control");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(count(&env, &mia, jql).await, json!({"count": 9}));
    let response = env
        .http
        .put(env.url(&format!(
            "_emulator/sites/{}/projects/OPS/visibility",
            env.site
        )))
        .json(&json!({"account_id": "nobody", "visible": false}))
        .send()
        .await
        .expect("control");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_project_that_becomes_visible_reveals_old_issues_and_moves_change_keys() {
    let env = start().await;
    env.emu.create_issues(&env.site, "ENG", 3);
    env.emu
        .set_project_visibility(&env.site, "SEC", &env.mia, false)
        .expect("project created hidden");
    let old_instant = instant("2026-10-01T12:00:00Z");
    let old = env.emu.create_issues_with(
        &env.site,
        "SEC",
        4,
        GenerateOptions {
            updated_at: Some(old_instant),
        },
    );
    assert_eq!(old.len(), 4);
    for snapshot in env.emu.issues(&env.site) {
        if snapshot.project_key == "SEC" {
            assert_eq!(snapshot.updated, old_instant);
            assert!(snapshot.created <= old_instant);
        }
    }
    let mia = env.token(&env.mia, ALL_SCOPES).await;
    let recent = r#"updated >= "2026-11-01" ORDER BY updated ASC"#;
    let everything = r#"updated >= "2020-01-01" ORDER BY updated ASC"#;
    assert_eq!(count(&env, &mia, everything).await, json!({"count": 3}));

    env.emu
        .set_project_visibility(&env.site, "SEC", &env.mia, true)
        .expect("shown");
    // An incremental query for recent changes does not see them: they are old.
    let page = json_of(env.search(&mia, json!({"jql": recent})).await).await;
    assert_eq!(page["issues"].as_array().expect("issues").len(), 3);
    let page = json_of(
        env.search(
            &mia,
            json!({"jql": everything, "fields": ["updated"], "maxResults": 100}),
        )
        .await,
    )
    .await;
    assert_eq!(page["issues"].as_array().expect("issues").len(), 7);
    assert_eq!(
        page["issues"][0]["fields"]["updated"],
        json!("2026-10-01T22:00:00.000+1000")
    );

    // Move ENG-2 to SEC: same id, new key, updated now; the old key still resolves.
    let before = env
        .emu
        .issues(&env.site)
        .into_iter()
        .find(|s| s.key == "ENG-2")
        .expect("ENG-2");
    env.clock.advance(TimeDelta::minutes(5));
    let moved = env
        .emu
        .move_issue(&env.site, "ENG-2", "SEC")
        .expect("moved");
    assert_eq!(moved.id, before.id);
    assert_eq!(moved.key, "SEC-5");
    assert_eq!(moved.project_key, "SEC");
    assert_eq!(moved.updated, instant("2026-11-22T09:05:00Z"));
    let mia = env.token(&env.mia, ALL_SCOPES).await;
    for name in ["ENG-2", "SEC-5", before.id.as_str()] {
        let response = env.get(env.jira(&format!("issue/{name}")), &mia).await;
        assert_eq!(response.status(), StatusCode::OK, "{name}");
        let issue = json_of(response).await;
        assert_eq!(issue["key"], json!("SEC-5"));
        assert_eq!(issue["fields"]["project"]["key"], json!("SEC"));
    }
    let page = json_of(
        env.search(&mia, json!({"jql": "project = ENG ORDER BY key"}))
            .await,
    )
    .await;
    assert!(!ids(&page).contains(&before.id), "no longer in ENG");
    // Hidden again: the moved issue disappears for Mia with the rest of SEC.
    env.emu
        .set_project_visibility(&env.site, "SEC", &env.mia, false)
        .expect("hidden");
    assert_eq!(
        bulkfetch(&env, &mia, &[before.id.clone(), "ENG-2".into()]).await,
        Vec::<String>::new()
    );
    // Moving to the same project is refused; the control API moves too.
    assert!(env.emu.move_issue(&env.site, "SEC-5", "SEC").is_err());
    let response = env
        .http
        .post(env.url(&format!("_emulator/sites/{}/issues/move", env.site)))
        .json(&json!({"issue": "SEC-5", "project_key": "OPS"}))
        .send()
        .await
        .expect("control");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json_of(response).await["key"], json!("OPS-1"));
    let response = env
        .http
        .post(env.url(&format!("_emulator/sites/{}/issues/generate", env.site)))
        .json(&json!({"project_key": "WEB", "count": 2, "updated_at": "2025-01-01T00:00:00Z"}))
        .send()
        .await
        .expect("control");
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(
        env.emu
            .issues(&env.site)
            .iter()
            .filter(|s| s.project_key == "WEB")
            .all(|s| s.updated == instant("2025-01-01T00:00:00Z"))
    );
}

// ----- 3 and 4. fields -----------------------------------------------------------------------------

#[tokio::test]
async fn field_list_describes_system_and_custom_fields() {
    let jira = OpenApi::load("jira-platform-v3.json");
    let env = start().await;
    let token = env.token(&env.mia, ALL_SCOPES).await;
    let response = env.get(env.jira("field"), &token).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "x-aaccountid"), Some(env.mia.as_str()));
    let fields = json_of(response).await;
    let schema = json!({"type": "array", "items": {"$ref": "#/components/schemas/FieldDetails"}});
    assert_valid(&jira, &schema, &fields, "GET /field");
    let by_id = |id: &str| {
        fields
            .as_array()
            .expect("array")
            .iter()
            .find(|f| f["id"] == json!(id))
            .cloned()
            .unwrap_or_else(|| panic!("no field {id}"))
    };
    assert_eq!(
        by_id("customfield_10016"),
        json!({
            "id": "customfield_10016",
            "key": "customfield_10016",
            "name": "Story point estimate",
            "custom": true,
            "orderable": true,
            "navigable": true,
            "searchable": true,
            "clauseNames": ["cf[10016]", "Story point estimate", "Story point estimate[Number]"],
            "schema": {
                "type": "number",
                "custom": "com.atlassian.jira.plugin.system.customfieldtypes:float",
                "customId": 10016,
            },
        })
    );
    let sprint = by_id("customfield_10020");
    assert_eq!(
        sprint["schema"],
        json!({"type": "array", "items": "json", "custom": "com.pyxis.greenhopper.jira:gh-sprint", "customId": 10020})
    );
    assert_eq!(
        by_id("labels")["schema"],
        json!({"type": "array", "items": "string", "system": "labels"})
    );
    assert_eq!(by_id("status")["custom"], json!(false));
    assert_eq!(by_id("comment")["navigable"], json!(false));
    assert_eq!(
        by_id("issuetype")["clauseNames"],
        json!(["issuetype", "type"])
    );
    // Scopes as for the other Jira reads.
    let token = env.token(&env.mia, "read:me read:jira-user").await;
    assert_eq!(
        env.get(env.jira("field"), &token).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

fn field_names(issue: &Value) -> BTreeSet<String> {
    issue["fields"]
        .as_object()
        .expect("fields")
        .keys()
        .cloned()
        .collect()
}

#[tokio::test]
async fn fields_select_navigable_all_explicit_and_excluded_and_issues_look_real() {
    let jira = OpenApi::load("jira-platform-v3.json");
    let env = start().await;
    env.emu.create_issues(&env.site, "ENG", 80);
    let token = env.token(&env.mia, ALL_SCOPES).await;
    let navigable: BTreeSet<String> = [
        "summary",
        "description",
        "status",
        "issuetype",
        "project",
        "assignee",
        "reporter",
        "creator",
        "priority",
        "resolution",
        "resolutiondate",
        "labels",
        "parent",
        "created",
        "updated",
        "customfield_10016",
        "customfield_10020",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let page_of = |fields: Value| {
        let env = &env;
        let token = token.clone();
        async move {
            let before = env.emu.quota_usage(Product::Jira).used;
            let response = env
                .search(
                    &token,
                    json!({"jql": "project = ENG ORDER BY id", "fields": fields, "maxResults": 100}),
                )
                .await;
            assert_eq!(response.status(), StatusCode::OK);
            let page = json_of(response).await;
            let returned = page["issues"].as_array().expect("issues").len() as u64;
            assert_eq!(
                env.emu.quota_usage(Product::Jira).used - before,
                1 + returned,
                "points: 1 + issues returned"
            );
            page
        }
    };

    let page = page_of(json!(["*navigable"])).await;
    let issues = page["issues"].as_array().expect("issues");
    assert_eq!(issues.len(), 80);
    for issue in issues {
        assert_eq!(field_names(issue), navigable);
        assert_fields_valid(&jira, issue, "*navigable issue");
    }
    // Realistic values: some parents, resolved issues, estimates and sprints.
    let with = |pred: &dyn Fn(&Value) -> bool| issues.iter().filter(|i| pred(&i["fields"])).count();
    assert!(with(&|f| f["parent"].is_object()) > 0);
    assert!(with(&|f| f["parent"].is_null()) > 0);
    assert!(with(&|f| f["customfield_10016"].is_number()) > 0);
    assert!(with(&|f| f["customfield_10020"].is_array()) > 0);
    for issue in issues {
        let fields = &issue["fields"];
        let done = fields["status"]["statusCategory"]["key"] == json!("done");
        assert_eq!(fields["resolution"].is_object(), done, "{issue}");
        assert_eq!(fields["resolutiondate"].is_string(), done);
        assert!(fields["status"]["statusCategory"]["name"].is_string());
        if let Some(parent) = fields["parent"].as_object() {
            assert!(parent["key"].as_str().expect("key").starts_with("ENG-"));
            assert!(parent["id"].is_string());
        }
    }
    let with_parent = issues
        .iter()
        .find(|i| i["fields"]["parent"].is_object())
        .expect("a child");
    let subtask = with_parent["fields"]["issuetype"]["subtask"] == json!(true);
    let parent_level = with_parent["fields"]["parent"]["fields"]["issuetype"]["hierarchyLevel"]
        .as_i64()
        .expect("level");
    assert_eq!(parent_level, if subtask { 0 } else { 1 });

    let page = page_of(json!(["*all"])).await;
    let mut all = navigable.clone();
    all.insert("comment".to_owned());
    for issue in page["issues"].as_array().expect("issues") {
        assert_eq!(field_names(issue), all);
        assert_fields_valid(&jira, issue, "*all issue");
    }

    let page = page_of(json!(["*navigable", "-description", "-customfield_10020"])).await;
    let mut expected = navigable.clone();
    expected.remove("description");
    expected.remove("customfield_10020");
    assert_eq!(field_names(&page["issues"][0]), expected);

    let page = page_of(json!("summary,customfield_10016,parent,comment,bogus")).await;
    assert_eq!(
        field_names(&page["issues"][0]),
        ["comment", "customfield_10016", "parent", "summary"]
            .into_iter()
            .map(str::to_owned)
            .collect()
    );

    // GET with comma-separated and repeated `fields`.
    let mut url = env.jira("search/jql");
    url.query_pairs_mut()
        .append_pair("jql", "project = ENG")
        .append_pair("fields", "*navigable,-labels")
        .append_pair("fields", "comment");
    let page = json_of(env.get(url, &token).await).await;
    let mut expected = navigable.clone();
    expected.remove("labels");
    expected.insert("comment".to_owned());
    assert_eq!(field_names(&page["issues"][0]), expected);

    // bulkfetch defaults to *navigable; GET issue to *all.
    let response = env
        .post(
            env.jira("issue/bulkfetch"),
            &token,
            &json!({"issueIdsOrKeys": ["ENG-1", "ENG-2"]}),
        )
        .await;
    let body = json_of(response).await;
    assert_eq!(field_names(&body["issues"][0]), navigable);
    let issue = json_of(env.get(env.jira("issue/ENG-1"), &token).await).await;
    assert_eq!(field_names(&issue), all);

    // names and schema cover the custom fields.
    let page = json_of(
        env.search(
            &token,
            json!({"jql": "project = ENG", "fields": ["customfield_10016", "customfield_10020", "parent"], "expand": "names,schema", "maxResults": 1}),
        )
        .await,
    )
    .await;
    assert_eq!(
        page["names"],
        json!({"parent": "Parent", "customfield_10016": "Story point estimate", "customfield_10020": "Sprint"})
    );
    assert_eq!(
        page["schema"]["customfield_10016"]["customId"],
        json!(10016)
    );
    assert!(page["schema"].get("parent").is_none());
    assert_valid(
        &jira,
        &jira.component("SearchAndReconcileResults"),
        &page,
        "names+schema",
    );
}

// ----- 5. NUL characters ------------------------------------------------------------------------

#[tokio::test]
async fn nul_characters_are_served_json_escaped() {
    let env = start().await;
    let ids = env.emu.create_issues(&env.site, "ENG", 2);
    let summary = "Null\u{0}byte\u{0} in summary";
    let snapshot = env
        .emu
        .update_issue_summary(&env.site, &ids[0], summary)
        .expect("updated");
    assert_eq!(snapshot.summary, summary);
    assert_eq!(snapshot.updated, env.emu.now());
    env.emu
        .upsert_issue(
            &env.site,
            IssueChange {
                issue: Some(ids[1].clone()),
                description: Some(Some("line\u{0}two".into())),
                labels: Some(vec!["nul\u{0}label".into()]),
                updated: env.emu.now(),
                ..IssueChange::default()
            },
        )
        .expect("updated");
    let token = env.token(&env.mia, ALL_SCOPES).await;
    let response = env
        .search(
            &token,
            json!({"jql": "project = ENG ORDER BY id", "fields": ["summary", "description", "labels"]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("body");
    assert!(
        text.contains(r#""summary":"Null\u0000byte\u0000 in summary""#),
        "{text}"
    );
    assert!(text.contains(r#""text":"line\u0000two""#), "{text}");
    assert!(text.contains(r#""nul\u0000label""#), "{text}");
    assert!(!text.contains('\u{0}'), "no raw NUL on the wire");
    let body: Value = serde_json::from_str(&text).expect("legal JSON");
    assert_eq!(body["issues"][0]["fields"]["summary"], json!(summary));
    // The control API takes the escape too.
    let response = env
        .http
        .put(env.url(&format!("_emulator/sites/{}/issues", env.site)))
        .json(&json!({"issue": "ENG-2", "summary": "a\u{0}b", "updated": "2026-11-22T09:00:00Z"}))
        .send()
        .await
        .expect("control");
    assert_eq!(response.status(), StatusCode::OK);
    let issue = json_of(env.get(env.jira("issue/ENG-2"), &token).await).await;
    assert_eq!(issue["fields"]["summary"], json!("a\u{0}b"));
}

// ----- 6. project restrictions ----------------------------------------------------------------------

#[tokio::test]
async fn project_equality_membership_and_inequality_and_unknown_projects() {
    let env = start().await;
    env.emu.create_issues(&env.site, "ENG", 4);
    env.emu.create_issues(&env.site, "OPS", 3);
    env.emu.create_issues(&env.site, "WEB", 2);
    let token = env.token(&env.mia, ALL_SCOPES).await;
    for (jql, expected) in [
        ("project = ENG", 4),
        ("project = eng", 4),
        ("project in (ENG, OPS)", 7),
        ("project != ENG", 5),
        ("project not in (ENG, OPS)", 2),
        ("project != ENG AND project != WEB", 3),
    ] {
        assert_eq!(
            count(&env, &token, jql).await,
            json!({"count": expected}),
            "{jql}"
        );
        let pages = scan(&env, &token, json!({"jql": jql, "maxResults": 2})).await;
        assert_eq!(all_ids(&pages).len(), expected, "{jql}");
    }
    for (jql, missing) in [
        ("project = XYZ", "XYZ"),
        ("project in (ENG, XYZ)", "XYZ"),
        ("project != QQ", "QQ"),
        ("project = ENG OR project = \"Nope\"", "Nope"),
    ] {
        let expected = format!(
            r#"{{"errorMessages":["The value '{missing}' does not exist for the field 'project'."],"errors":{{}}}}"#
        );
        let response = env.search(&token, json!({"jql": jql})).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{jql}");
        assert_eq!(response.text().await.expect("body"), expected);
        let response = env
            .post(
                env.jira("search/approximate-count"),
                &token,
                &json!({"jql": jql}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{jql}");
        assert_eq!(response.text().await.expect("body"), expected);
    }
}

// ----- 7. rate-limit headers and tenant quotas ---------------------------------------------------

fn h(response: &reqwest::Response, name: &str) -> String {
    header(response, name).unwrap_or_default().to_owned()
}

#[tokio::test]
async fn tenant_quota_adds_its_policy_and_walls_off_only_that_site_and_product() {
    let env = start_with(EmulatorConfig::default()).await;
    let other = env
        .emu
        .add_site("beta", &[Product::Jira, Product::Confluence]);
    let lee = env.emu.add_user(NewUser {
        name: "Lee Park".into(),
        email: "lee@example.com".into(),
        zoneinfo: "UTC".into(),
        jira_time_zone: "UTC".into(),
        sites: vec![env.site.clone(), other.clone()],
    });
    env.emu.create_issues(&env.site, "ENG", 3);
    env.emu.create_issues(&other, "ENG", 3);
    env.clock.advance(TimeDelta::minutes(45));
    let token = env.token(&lee, ALL_SCOPES).await;
    let other_issue = env.url(&format!("ex/jira/{other}/rest/api/3/issue/ENG-1"));

    // Without a tenant quota: the global policy only (plus burst).
    let response = env.get(env.jira("issue/ENG-1"), &token).await;
    assert_eq!(
        h(&response, "ratelimit-policy"),
        "\"global-app-quota\";q=65000;w=3600, \"jira-burst-based\";q=100;w=1"
    );
    assert_eq!(h(&response, "ratelimit"), "\"global-app-quota\";t=900");

    env.emu.set_tenant_quota(&env.site, Product::Jira, Some(10));
    // GET issue costs 2: 2, 4, 6, 8 → r appears after 80 % (8 > 8? no; at 10 yes).
    let mut seen = Vec::new();
    for _ in 0..5 {
        let response = env.get(env.jira("issue/ENG-1"), &token).await;
        assert_eq!(response.status(), StatusCode::OK);
        seen.push((
            h(&response, "ratelimit-policy"),
            h(&response, "ratelimit"),
            h(&response, "x-ratelimit-limit"),
            h(&response, "x-ratelimit-nearlimit"),
        ));
    }
    assert_eq!(
        seen[0].0,
        "\"global-app-quota\";q=65000;w=3600, \"tenant-app-quota\";q=10;w=3600, \"jira-burst-based\";q=100;w=1"
    );
    assert_eq!(
        seen[0].1,
        "\"global-app-quota\";t=900, \"tenant-app-quota\";t=900"
    );
    assert_eq!(seen[0].2, "65000", "X-RateLimit-* report the global pool");
    assert_eq!(
        seen[3].1,
        "\"global-app-quota\";t=900, \"tenant-app-quota\";t=900"
    );
    assert_eq!(
        seen[4].1,
        "\"global-app-quota\";t=900, \"tenant-app-quota\";r=0;t=900"
    );
    assert_eq!(seen[4].3, "true");
    let usage = env.emu.tenant_quota_usage(&env.site, Product::Jira);
    assert_eq!((usage.points_per_hour, usage.used), (Some(10), 10));

    // Spent: that site's Jira gets 429 tenant-based until the top of the hour.
    let response = env.get(env.jira("issue/ENG-1"), &token).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(h(&response, "ratelimit-reason"), "jira-quota-tenant-based");
    assert_eq!(h(&response, "retry-after"), "900");
    assert_eq!(h(&response, "x-ratelimit-limit"), "10");
    assert_eq!(h(&response, "x-ratelimit-remaining"), "0");
    assert_eq!(h(&response, "x-ratelimit-reset"), "2026-11-22T10:00:00Z");
    let response = env.search(&token, json!({"jql": "project = ENG"})).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    // Another site and the same site's Confluence are unaffected.
    let response = env.get(other_issue.clone(), &token).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        h(&response, "ratelimit-policy"),
        "\"global-app-quota\";q=65000;w=3600, \"jira-burst-based\";q=100;w=1"
    );
    let response = env.get(env.wiki("api/v2/spaces"), &token).await;
    assert_eq!(response.status(), StatusCode::OK);

    // Confluence tenant quota, set through the control API.
    let response = env
        .http
        .put(env.url(&format!("_emulator/sites/{}/quota", env.site)))
        .json(&json!({"product": "confluence", "points_per_hour": 1}))
        .send()
        .await
        .expect("control");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = env.get(env.wiki("api/v2/spaces"), &token).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        h(&response, "ratelimit"),
        "\"global-app-quota\";t=900, \"tenant-app-quota\";r=0;t=900"
    );
    let response = env.get(env.wiki("api/v2/spaces"), &token).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        h(&response, "ratelimit-reason"),
        "confluence-quota-tenant-based"
    );
    let quota = json_of(
        env.http
            .get(env.url("_emulator/quota"))
            .send()
            .await
            .expect("quota"),
    )
    .await;
    assert_eq!(quota["tenants"].as_array().expect("tenants").len(), 2);

    // The global quota still answers global-based, for every site.
    env.emu.set_quota(Product::Jira, Some(1));
    let response = env.get(other_issue.clone(), &token).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(h(&response, "ratelimit-reason"), "jira-quota-global-based");

    // At the top of the hour everything resets; removing the tenant quota drops its policy.
    env.emu.set_quota(Product::Jira, Some(65_000));
    env.clock.advance(TimeDelta::minutes(15));
    let token = env.token(&lee, ALL_SCOPES).await;
    let response = env.get(env.jira("issue/ENG-1"), &token).await;
    assert_eq!(response.status(), StatusCode::OK);
    env.emu.set_tenant_quota(&env.site, Product::Jira, None);
    let response = env.get(env.jira("issue/ENG-1"), &token).await;
    assert_eq!(
        h(&response, "ratelimit-policy"),
        "\"global-app-quota\";q=65000;w=3600, \"jira-burst-based\";q=100;w=1"
    );
}
