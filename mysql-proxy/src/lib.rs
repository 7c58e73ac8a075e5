//! `ocean mysql-proxy`: clients log in as their JOBNAME from an IP of a running task of
//! that job, only into databases granted to the job; the proxy logs in to the database's
//! current primary (or a replica for `ro` grants) with credentials only it holds.
