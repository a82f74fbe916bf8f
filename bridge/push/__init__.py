"""Signed HTTP push: the events of chosen channels POSTed to each ``[[webhook]]`` target, in
order per channel, retried for a bounded time, then dead-lettered. The signature is pure code
(:mod:`~bridge.push.signature`); one target's delivery loop is :mod:`~bridge.push.target`, its
counts and dead letters :mod:`~bridge.push.record`, every target under its lease
:mod:`~bridge.push.pusher`."""
