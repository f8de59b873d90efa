//! Opens 20 new database files with `synchronous=OFF` and writes one table in each: run it
//! under `strace -f -c -e trace=fsync,fdatasync` to count the syncs that creating a file costs.
use durable_sql::{Database, Durability, Options};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).ok_or("usage: open_many DIR")?;
    for i in 0..20 {
        let options = Options::new().durability(Durability::Off);
        let db = Database::open(format!("{dir}/db{i}.sqlite"), options)?;
        db.exec("CREATE TABLE t (x)", &[])?;
        db.commit()?;
    }
    Ok(())
}
