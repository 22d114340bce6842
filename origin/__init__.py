"""The demo origin: a synthetic, versioned content catalogue behind `foresight origin`.

``origin.catalog`` is the pure part (which item is what, its bytes, its ETag, its version);
``origin.server`` serves it over HTTP and announces each new version on content-updates.
Real deployments point Foresight at their own origin instead.
"""
