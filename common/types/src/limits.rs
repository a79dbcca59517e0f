//! Every bound in decree, named, with its unit last (STYLE.md principle 6).
