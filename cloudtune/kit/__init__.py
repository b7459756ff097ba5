"""What every cloud launcher shares: staging and content-addressed uploads over an object-store protocol, job
naming, job states (one enum, a table per cloud), idempotent create, one retry policy and the translation of
SDK errors into one line. No module here imports a cloud SDK; launchers pass in what talks to their cloud."""
