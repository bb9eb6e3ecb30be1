/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  How the refresh worker's files stand: the layers, top to bottom.
 *
 *	  Each file calls only the files below it:
 *	  worker.c  the loop: signals, latch, WaitEventSet, start-up, cleanup
 *	  queue.c   what runs next: the local queues (callers', sweeps'),
 *	            draining the shared ring, sweeps, fair order, the global
 *	            and per-provider limits; starting jobs, collecting their
 *	            calls, telling callers of calls past oauth.http_timeout
 *	  finish.c  a job's last step: storing its result; answers kept until
 *	            their row takes them, and replayed at start-up
 *	  job.c     a job's life: its state (job_move), its connection's row
 *	            and request (prepare), its answer, refused tokens,
 *	            publishing its outcome
 *	  (http.c, provider.c, tenant_answers.c: the calls and their answers)
 *	  durable.c the answer store: answers recorded before they are applied;
 *	            the schema version
 *	  batch.c   the worker's transactions: a batch of jobs in one
 *	            transaction, each job in its own subtransaction; events
 *
 *	  Each file has its own header; this one only says how they stand.
 *
 *-------------------------------------------------------------------------
 */
