//! `durable objects`: names, sizes (human units in text) and last write times.

use crate::support::Data;

#[test]
fn lists_every_object_with_size_and_time() {
    let data = Data::new();
    assert!(data.ok(&["objects"]).starts_with("no objects"));
    data.ok(&["sql", "room 42", "CREATE TABLE t (x)"]);
    data.ok(&["kv", "put", "alpha", "k", "1"]);
    let doc = data.json(&["objects"]);
    let list = doc.as_array().unwrap();
    let names: Vec<&str> = list.iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alpha", "room 42"]);
    for object in list {
        assert!(object["size"].as_u64().unwrap() >= 4096, "{object}");
        assert!(object["last_write"].as_str().unwrap().ends_with('Z'), "{object}");
    }
    let text = data.ok(&["objects"]);
    assert!(text.lines().nth(2).unwrap().starts_with("alpha "), "{text}");
    assert!(text.lines().nth(3).unwrap().starts_with("room 42 "), "{text}");
    // Sizes in human units in the table (bytes in JSON).
    let size = list[0]["size"].as_u64().unwrap();
    assert_eq!(size % 4096, 0, "{size}");
    let human = format!("| {:.2} KiB ", size as f64 / 1024.0);
    assert!(text.lines().nth(2).unwrap().contains(&human), "{human} in {text}");
}
