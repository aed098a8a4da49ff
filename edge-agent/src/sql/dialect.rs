//! The weir dialect of SQL: Flink SQL's lexical rules on `sqlparser`, with
//! its extension hooks for what the generic dialect does not parse.

use sqlparser::ast::{Expr, Ident};
use sqlparser::dialect::Dialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::Token;

/// Flink SQL as weir reads it: identifiers quoted with backticks, and
/// `TABLE name [PARTITION BY cols]` as an argument of a table-valued
/// function (`TUMBLE(TABLE Bid, DESCRIPTOR(bidtime), …)`).
///
/// `CREATE TABLE` (computed columns, `WATERMARK FOR`) and `SET 'k' = 'v'`
/// are read by [`super::ddl`] with the parser's own building blocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct WeirDialect;

/// The name an argument `TABLE t` is given in the AST: an
/// `Expr::Prefixed` with this prefix and a tuple of the table name and the
/// partition keys.
pub const TABLE_ARG: &str = "TABLE";

impl Dialect for WeirDialect {
    fn is_identifier_start(&self, ch: char) -> bool {
        ch.is_alphabetic() || ch == '_'
    }

    fn is_identifier_part(&self, ch: char) -> bool {
        ch.is_alphanumeric() || ch == '_' || ch == '$'
    }

    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        ch == '`'
    }

    fn identifier_quote_style(&self, _identifier: &str) -> Option<char> {
        Some('`')
    }

    fn supports_named_fn_args_with_rarrow_operator(&self) -> bool {
        true
    }

    fn supports_filter_during_aggregation(&self) -> bool {
        // `COUNT(*) FILTER (WHERE v > 3)` (`Ctx::aggregate_as`).
        true
    }

    fn supports_group_by_expr(&self) -> bool {
        // GROUPING SETS, ROLLUP, CUBE (`super::groups`).
        true
    }

    fn parse_prefix(&self, parser: &mut Parser) -> Option<Result<Expr, ParserError>> {
        if !parser.peek_keyword(Keyword::TABLE) {
            return None;
        }
        // `TABLE name`, not the `TABLE(…)` of a FROM clause.
        if !matches!(parser.peek_nth_token_ref(1).token, Token::Word(_)) {
            return None;
        }
        let start = parser.next_token().span;
        Some(table_arg(parser, start))
    }
}

fn table_arg(p: &mut Parser, start: sqlparser::tokenizer::Span) -> Result<Expr, ParserError> {
    let name = p.parse_identifier()?;
    let mut items = vec![Expr::Identifier(name)];
    if p.parse_keywords(&[Keyword::PARTITION, Keyword::BY]) {
        if p.consume_token(&Token::LParen) {
            let keys = p.parse_comma_separated(Parser::parse_identifier)?;
            p.expect_token(&Token::RParen)?;
            items.extend(keys.into_iter().map(Expr::Identifier));
        } else {
            items.push(Expr::Identifier(p.parse_identifier()?));
        }
    }
    Ok(Expr::Prefixed {
        prefix: Ident::with_span(start, TABLE_ARG),
        value: Box::new(Expr::Tuple(items)),
    })
}
