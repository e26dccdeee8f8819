"""Development tooling: the embedded AWS stack (moto server + an SQS event-source poller),
the demo, and helpers the tests share. Not product code: nothing in layers/ imports it."""
