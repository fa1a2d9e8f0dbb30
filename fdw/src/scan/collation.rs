//! Which collations DuckDB can compare, sort and lower text under exactly.
//!
//! DuckDB compares strings byte by byte (memcmp over UTF-8). Postgres equality
//! under a deterministic collation is byte equality too, so equality is pushed
//! under any deterministic collation. Ordering is pushed only where Postgres'
//! order is the byte order of UTF-8:
//! - `C`/`POSIX`, and any collation Postgres itself treats as C (on PostgreSQL 18
//!   the builtin provider's `C` and `C.UTF-8`, which sort by code point);
//! - a libc collation named `C.UTF-8` (any spelling glibc accepts for it) in a
//!   UTF8 database, with glibc 2.35 or later. Since 2.35 that locale is built with
//!   `codepoint_collation`, so glibc's `strcoll` is `strcmp`: code point order,
//!   which for valid UTF-8 (all Postgres stores) is byte order. Postgres does not
//!   treat it as C and calls `strcoll`, which is why this is decided here. Earlier
//!   glibc versions only had distribution patches of that locale, so they are not
//!   trusted.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CStr;

use pgrx::pg_sys::{self, Oid};

/// Whether two strings are equal under `collation` exactly when their bytes are.
pub fn collation_is_deterministic(collation: Oid) -> bool {
    // SAFETY: catalog lookup; InvalidOid means "not collatable".
    collation == pg_sys::InvalidOid || unsafe { pg_sys::get_collation_isdeterministic(collation) }
}

/// For text operands: whether Postgres compares them under a collation whose equality
/// is byte equality, as DuckDB's is. No collation (`InvalidOid`) means implicit ones
/// in conflict, on which Postgres raises when it compares.
pub fn text_equality_is_bytewise(collation: Oid) -> bool {
    collation != pg_sys::InvalidOid && collation_is_deterministic(collation)
}

/// Whether text ordering under `collation` is bytewise, as DuckDB's is.
pub fn collation_sorts_bytewise(collation: Oid) -> bool {
    if collation == pg_sys::InvalidOid || collation == pg_sys::C_COLLATION_OID {
        return true;
    }
    // SAFETY: these look up (and cache) the collation's locale; they raise an ERROR
    // only for a collation that does not exist, which a planned query cannot have.
    if unsafe { locale::collate_is_c(collation) } {
        return true;
    }
    cached(&SORTS_BYTEWISE, collation, || {
        libc_locale(collation, Category::Collate).is_some_and(|name| is_glibc_c_utf8(&name)) && glibc_has_codepoint_c_utf8()
    })
}

/// Whether `lower()` under `collation` maps every character as DuckDB's `lower`
/// does, so that ILIKE (Postgres lowers both sides under the collation, then
/// matches) means the same in DuckDB.
///
/// DuckDB lowers by Unicode's simple case mapping (utf8proc, Unicode 15.1 in
/// DuckDB 1.5.5). So does glibc's `towlower`, which Postgres uses for a libc
/// collation of a UTF-8 locale, from glibc's own Unicode tables: glibc 2.35 to
/// 2.40 (Unicode 14 and 15) agree with DuckDB on every code point, as
/// `tests/test_query_pushdown.py` checks on the machine it runs on, except in the
/// Turkic locales, which lower `I` to a dotless `ı`. Older glibc lacks case pairs
/// that Unicode 14 added and newer ones have Unicode 16's, so there ILIKE stays in
/// Postgres. Not pushed either: a `C`/`POSIX` LC_CTYPE (Postgres lowers ASCII
/// only), ICU (full, locale-dependent case mapping), the builtin provider
/// (Postgres' own tables).
pub fn collation_lowers_as_duckdb(collation: Oid) -> bool {
    // No collation for text: implicit ones in conflict, which Postgres raises on.
    if collation == pg_sys::InvalidOid || !glibc_case_maps_as_duckdb() {
        return false;
    }
    cached(&LOWERS_AS_DUCKDB, collation, || {
        libc_locale(collation, Category::Ctype).is_some_and(|name| {
            let language = name.split(['_', '.', '@']).next().unwrap_or_default();
            let utf8 = name.split_once('.').is_some_and(|(_, rest)| is_utf8_codeset(rest.split('@').next().unwrap_or_default()));
            utf8 && !matches!(language, "tr" | "az" | "crh" | "ku" | "tt") && !name.contains("@iqtelif")
        })
    })
}

thread_local! {
    // A collation's provider and locales never change once created (ALTER COLLATION
    // only renames or refreshes the version), and nor do a database's.
    static SORTS_BYTEWISE: RefCell<HashMap<Oid, bool>> = RefCell::new(HashMap::new());
    static LOWERS_AS_DUCKDB: RefCell<HashMap<Oid, bool>> = RefCell::new(HashMap::new());
}

fn cached(cache: &'static std::thread::LocalKey<RefCell<HashMap<Oid, bool>>>, collation: Oid, answer: impl FnOnce() -> bool) -> bool {
    if let Some(known) = cache.with(|cache| cache.borrow().get(&collation).copied()) {
        return known;
    }
    let answer = answer();
    cache.with(|cache| cache.borrow_mut().insert(collation, answer));
    answer
}

#[derive(Clone, Copy)]
enum Category {
    Collate,
    Ctype,
}

/// A libc collation's LC_COLLATE or LC_CTYPE locale (the database's, for the
/// default collation), or None for other providers or a database not in UTF8.
fn libc_locale(collation: Oid, category: Category) -> Option<String> {
    // SAFETY: syscache lookups of a collation that a planned query references, and
    // of the current database; the tuple is released before returning.
    unsafe {
        if pg_sys::GetDatabaseEncoding() != pg_sys::pg_enc::PG_UTF8 as i32 {
            return None;
        }
        type ProviderOf = unsafe fn(pg_sys::HeapTuple) -> std::ffi::c_char;
        let (cache, key, provider_of, attribute): (_, _, ProviderOf, _) = if collation == pg_sys::DEFAULT_COLLATION_OID {
            (
                pg_sys::SysCacheIdentifier::DATABASEOID,
                pg_sys::MyDatabaseId,
                |tuple| (*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_database>(tuple)).datlocprovider,
                match category {
                    Category::Collate => pg_sys::Anum_pg_database_datcollate,
                    Category::Ctype => pg_sys::Anum_pg_database_datctype,
                },
            )
        } else {
            (
                pg_sys::SysCacheIdentifier::COLLOID,
                collation,
                |tuple| (*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_collation>(tuple)).collprovider,
                match category {
                    Category::Collate => pg_sys::Anum_pg_collation_collcollate,
                    Category::Ctype => pg_sys::Anum_pg_collation_collctype,
                },
            )
        };
        let tuple = pg_sys::SearchSysCache1(cache as i32, pg_sys::Datum::from(key));
        if tuple.is_null() {
            return None;
        }
        let mut name = None;
        if provider_of(tuple) as u8 == b'c' {
            let mut is_null = false;
            let datum = pg_sys::SysCacheGetAttr(cache as i32, tuple, attribute as i16, &mut is_null);
            if !is_null {
                let text = pg_sys::text_to_cstring(datum.cast_mut_ptr());
                name = Some(CStr::from_ptr(text).to_string_lossy().into_owned());
                pg_sys::pfree(text.cast());
            }
        }
        pg_sys::ReleaseSysCache(tuple);
        name
    }
}

/// `C.UTF-8`, `C.utf8`, ...: no modifier (`@...`, which names another locale).
fn is_glibc_c_utf8(name: &str) -> bool {
    name.strip_prefix("C.")
        .is_some_and(|codeset| is_utf8_codeset(codeset) && codeset.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
}

/// Whether glibc reads `codeset` as UTF-8: it normalizes a codeset by dropping what is
/// not alphanumeric and lowering the case.
fn is_utf8_codeset(codeset: &str) -> bool {
    codeset.chars().filter(char::is_ascii_alphanumeric).collect::<String>().eq_ignore_ascii_case("utf8")
}

fn glibc_has_codepoint_c_utf8() -> bool {
    glibc_version().is_some_and(|version| version >= (2, 35))
}

fn glibc_case_maps_as_duckdb() -> bool {
    glibc_version().is_some_and(|version| ((2, 35)..(2, 41)).contains(&version))
}

/// The running glibc's (major, minor) version; None on another C library.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn glibc_version() -> Option<(u32, u32)> {
    unsafe extern "C" {
        fn gnu_get_libc_version() -> *const std::ffi::c_char;
    }
    // SAFETY: returns a static NUL-terminated string.
    let version = unsafe { CStr::from_ptr(gnu_get_libc_version()) }.to_string_lossy();
    let mut parts = version.split('.').map(|part| part.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??))
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn glibc_version() -> Option<(u32, u32)> {
    None
}

#[cfg(feature = "pg18")]
mod locale {
    use pgrx::pg_sys::Oid;

    /// The leading fields of PostgreSQL 18's `struct pg_locale_struct` (utils/pg_locale.h).
    #[repr(C)]
    struct LocaleHead {
        provider: std::ffi::c_char,
        deterministic: bool,
        collate_is_c: bool,
    }

    unsafe extern "C-unwind" {
        fn pg_newlocale_from_collation(collid: Oid) -> *const LocaleHead;
    }

    pub unsafe fn collate_is_c(collation: Oid) -> bool {
        unsafe {
            let locale = pg_newlocale_from_collation(collation);
            !locale.is_null() && (*locale).collate_is_c
        }
    }
}

#[cfg(not(feature = "pg18"))]
mod locale {
    use pgrx::pg_sys::Oid;

    unsafe extern "C-unwind" {
        fn lc_collate_is_c(collation: Oid) -> bool;
    }

    pub unsafe fn collate_is_c(collation: Oid) -> bool {
        unsafe { lc_collate_is_c(collation) }
    }
}
