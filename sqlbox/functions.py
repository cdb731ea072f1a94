"""The functions candidate SQL may call, per dialect: an allowlist, declared here and nowhere else.

A candidate is a read-only analytical query. It may call the scalar, aggregate and window functions such
queries use (arithmetic, string, date, conditional, statistics, ranking); everything else is refused by the
guard (`sqlbox.guard.guard`), whatever the engine would make of it. No function on these lists reads or
writes files, takes SQL or a path as text, reads settings, sessions, accounts or catalogs, sleeps, locks,
signals, or changes state.

A function is named two ways:
- sqlglot knows many functions by type (`exp.Count`, `exp.Substring`, ...): such a node renders as the
  target engine's own spelling of that computation, so it is allowed by its type (`SAFE_TYPES`), in any
  dialect;
- a function sqlglot does not know stays `exp.Anonymous` and renders as written: it is allowed only when
  its name, unquoted, case-folded and without any schema qualifier, is on the list of the dialect it was
  parsed in (`SAFE_NAMES`). A schema-qualified call of an allowed name is rendered unqualified (the
  engine's built-in, never a same-named function in some schema).

Table functions (in FROM) have their own short list (`TABLE_FUNCTIONS`); `sqlbox.guard` also bounds
their arguments.
"""

from __future__ import annotations

# sqlglot function types (exp.<name>) that compute on values only. Connectives and conditionals are Func
# subclasses in sqlglot too. Not here on purpose: Repeat, Space, Pad (a single call can build a huge value),
# CurrentUser, CurrentSchema (accounts, catalogs), ReadCSV/ReadParquet and other table sources, XML/JSON
# table functions, Uuid-like generators with state, NextValueFor (sequences), Explode (unbounded rows).
SAFE_TYPES: frozenset[str] = frozenset({
    # logic and conditionals
    "And", "Or", "Xor", "Case", "If", "Coalesce", "Nullif", "Nvl2", "Exists", "Greatest", "Least",
    "EqualNull", "Cast", "TryCast", "Collate",
    # aggregates
    "Count", "CountIf", "Sum", "Avg", "Min", "Max", "AnyValue", "GroupConcat", "ArrayAgg", "Stddev",
    "StddevPop", "StddevSamp", "Variance", "VariancePop", "Median", "PercentileCont", "PercentileDisc",
    "Quantile", "ApproxDistinct", "LogicalAnd", "LogicalOr", "Corr", "CovarPop", "CovarSamp", "ArgMax",
    "ArgMin", "First", "Last", "BitwiseAndAgg", "BitwiseOrAgg", "BitwiseXorAgg",
    # window functions
    "RowNumber", "Rank", "DenseRank", "Ntile", "CumeDist", "PercentRank", "Lag", "Lead", "FirstValue",
    "LastValue", "NthValue",
    # arithmetic
    "Abs", "Round", "Floor", "Ceil", "Sqrt", "Cbrt", "Pow", "Exp", "Ln", "Log", "Sign", "Pi", "Rand",
    "Degrees", "Radians", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Atan2", "Cot", "SafeDivide",
    "Factorial",
    # strings
    "Lower", "Upper", "Length", "ByteLength", "BitLength", "Substring", "Left", "Right", "Trim", "Concat",
    "ConcatWs", "Replace", "Reverse", "StrPosition", "Initcap", "Ascii", "Chr", "Unicode", "Translate",
    "SplitPart", "SubstringIndex", "StartsWith", "EndsWith", "Contains", "RegexpLike", "RegexpILike",
    "RegexpReplace", "RegexpExtract", "Levenshtein", "Soundex", "Hex", "LowerHex", "MD5", "Typeof",
    # dates and times (the date part names and format strings are values, never paths)
    "CurrentDate", "CurrentTime", "CurrentTimestamp", "CurrentDatetime", "Date", "Datetime", "Time",
    "Timestamp", "DateAdd", "DateSub", "DateDiff", "DateTrunc", "DatetimeAdd", "DatetimeSub", "DatetimeDiff",
    "TimeAdd", "TimeSub", "TimeDiff", "TimestampAdd", "TimestampSub", "TimestampDiff", "TimestampTrunc",
    "Extract", "Year", "Quarter", "Month", "Week", "WeekOfYear", "Day", "DayOfMonth", "DayOfWeek",
    "DayOfWeekIso", "DayOfYear", "Hour", "Minute", "Second", "Monthname", "LastDay", "AddMonths",
    "MonthsBetween", "StrToDate", "StrToTime", "TimeToStr", "TimeStrToTime", "TimeStrToDate",
    "TimeToTimeStr", "DateStrToDate", "DateToDateStr", "UnixToTime", "UnixToStr", "TimeToUnix", "StrToUnix",
    "TsOrDsToDate", "TsOrDsToTimestamp", "TsOrDsToDatetime", "TsOrDsToTime", "TsOrDsAdd", "TsOrDsDiff",
    "TsOrDsToDateStr", "ToChar", "ToNumber", "NumberToStr", "Format", "DateFromParts",
    # JSON values (reading a value out of a column's JSON text)
    "JSONExtract", "JSONExtractScalar", "JSONBExtract", "JSONBExtractScalar",
})

# Engine functions sqlglot keeps as exp.Anonymous, per dialect the query is parsed in (lower case).
_COMMON = frozenset({
    "abs", "round", "floor", "ceil", "ceiling", "sign", "sqrt", "power", "pow", "exp", "ln", "log", "log10",
    "log2", "mod", "pi", "degrees", "radians", "sin", "cos", "tan", "asin", "acos", "atan", "atan2", "cot",
    "trunc", "truncate", "lower", "upper", "length", "char_length", "character_length", "octet_length",
    "substr", "substring", "trim", "ltrim", "rtrim", "replace", "reverse", "instr", "concat", "concat_ws",
    "left", "right", "coalesce", "nullif", "ifnull", "greatest", "least", "count", "sum", "avg", "min", "max",
    "row_number", "rank", "dense_rank", "ntile", "lag", "lead", "first_value", "last_value", "nth_value",
    "cume_dist", "percent_rank", "stddev", "stddev_pop", "stddev_samp", "variance", "var_pop", "var_samp",
})
SAFE_NAMES: dict[str, frozenset[str]] = {
    "sqlite": _COMMON | {
        "julianday", "date", "time", "datetime", "strftime", "unixepoch", "iif", "total", "group_concat",
        "char", "unicode", "hex", "likely", "unlikely", "likelihood", "typeof", "nullif",
        "random", "avg", "median",
    },
    "duckdb": _COMMON | {
        "strftime", "strptime", "date_part", "datepart", "date_diff", "datediff", "date_trunc", "datetrunc",
        "date_add", "date_sub", "year", "month", "day", "dayname", "monthname", "epoch", "make_date",
        "string_agg", "group_concat", "list_aggr", "arg_max", "arg_min", "any_value", "first", "last",
        "bool_and", "bool_or", "regexp_matches", "regexp_extract", "regexp_replace", "strpos", "position",
        "split_part", "starts_with", "ends_with", "contains", "prefix", "suffix", "ascii", "chr", "initcap",
        "try_cast", "round_even", "even", "fdiv", "fmod", "isnan", "isinf", "isfinite", "median", "mode",
        "quantile_cont", "quantile_disc", "array_extract", "list_extract", "len", "nullif", "if", "ifnull",
        "arg_max_null", "arg_min_null",
    },
    "postgres": _COMMON | {
        "to_char", "to_date", "to_timestamp", "to_number", "date_part", "date_trunc", "age", "make_date",
        "justify_days", "strpos", "position", "split_part", "initcap", "btrim", "translate",
        "regexp_replace", "regexp_match", "string_agg", "array_agg", "bool_and", "bool_or", "every",
        "percentile_cont", "percentile_disc", "mode", "width_bucket", "div", "cbrt", "random", "ascii", "chr",
        "corr", "covar_pop", "covar_samp", "regr_slope", "regr_intercept", "regr_count", "regr_r2",
        "isfinite", "num_nonnulls", "num_nulls", "array_length", "cardinality", "array_position",
    },
    "mysql": _COMMON | {
        "date_format", "str_to_date", "datediff", "timestampdiff", "timestampadd", "date_add", "date_sub",
        "adddate", "subdate", "year", "month", "day", "dayofmonth", "dayofweek", "dayofyear", "dayname",
        "monthname", "week", "weekday", "quarter", "hour", "minute", "second", "last_day", "makedate",
        "period_diff", "to_days", "from_days", "curdate", "current_date", "now", "if", "locate",
        "substring_index", "lcase", "ucase", "group_concat", "std", "bit_and", "bit_or", "bit_xor",
        "find_in_set", "field", "elt", "strcmp", "soundex", "ascii", "ord", "char", "format", "conv", "hex",
        "crc32", "md5", "rand", "any_value",
    },
}

# Table-valued functions allowed in FROM, per dialect (their arguments are bounded by the guard).
# SQLite-dialect candidates run on the DuckDB engine by default, so they get DuckDB's (the sqlite engine
# itself has none of them: "no such table").
TABLE_FUNCTIONS: dict[str, frozenset[str]] = {
    "sqlite": frozenset({"range", "generate_series", "unnest"}),
    "duckdb": frozenset({"range", "generate_series", "unnest"}),
    "postgres": frozenset({"generate_series", "unnest"}),
    "mysql": frozenset(),
}
# A dialect with no list of its own gets the names every list has (the safe choice).
_ALL_NAMES = frozenset.intersection(*SAFE_NAMES.values())


def safe_names(dialect: str) -> frozenset[str]:
    """The anonymous function names a query parsed in `dialect` may call."""
    return SAFE_NAMES.get(dialect, _ALL_NAMES)


def table_functions(dialect: str) -> frozenset[str]:
    """The table functions a query parsed in `dialect` may read from (DuckDB's when it is unknown: the
    file engine's)."""
    return TABLE_FUNCTIONS.get(dialect, TABLE_FUNCTIONS["duckdb"])


# SQL keywords that an engine evaluates as a function when written bare, as if a column: they name the
# session's account, role, catalog or schema. A column by such a name must be quoted.
NILADIC_KEYWORDS: frozenset[str] = frozenset({
    "user", "current_user", "session_user", "current_role", "current_catalog", "current_schema",
    "system_user", "current_database",
})


# PostgreSQL's own reading of a query (`sqlbox.servers.execute.check_pg_plan`, from EXPLAIN VERBOSE) is checked against
# these: a backup for the allowlist above in case sqlglot and PostgreSQL ever tokenize a candidate differently
# (as they did E'...' strings). Any schema-qualified call other than pg_catalog's is refused there too.
PG_PLAN_FORBIDDEN_PREFIXES: tuple[str, ...] = ("pg_", "lo_", "dblink", "txid_", "has_", "inet_", "query_to",
                                               "ts_", "xpath", "xml", "binary_upgrade")
PG_PLAN_FORBIDDEN: frozenset[str] = frozenset({
    "set_config", "current_setting", "version", "current_database", "current_schema", "current_schemas",
    "current_query", "nextval", "setval", "currval", "lastval", "cursor_to_xml", "table_to_xml",
    "schema_to_xml", "database_to_xml", "to_regclass", "to_regrole", "to_regnamespace", "to_regproc",
    "obj_description", "col_description", "shobj_description", "format_type", "row_security_active",
    "json_populate_record", "clock_timestamp", "statement_timestamp",
})
