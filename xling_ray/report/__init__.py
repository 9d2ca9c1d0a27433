"""Looking at results: embedding-space diagnostics, figures and the HTML sweep report."""
