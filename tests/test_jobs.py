"""Background jobs end with a result or a message, never by spinning: user errors and bugs alike."""
import logging

from labeler.errors import LabelerError
from labeler.jobs import Job


def test_a_job_reports_progress_and_keeps_its_result():
    def work(job):
        for done in range(3):
            job.report("counting", done + 1, 3)
        return "counted"

    job = Job(work).start()
    assert job.join(timeout=30)
    assert (job.result, job.error, job.stage, job.done, job.total) == ("counted", None, "counting", 3, 3)
    assert not job.running and job.elapsed >= 0


def test_a_user_error_becomes_the_jobs_message():
    def work(job):
        raise LabelerError("The folder holds no images. Pick another.")

    job = Job(work).run()
    assert job.finished and job.error == "The folder holds no images. Pick another." and job.result is None


def test_a_bug_finishes_the_job_with_a_brief_message_and_a_logged_traceback(caplog):
    def work(job):
        return {}["missing"]

    with caplog.at_level(logging.ERROR, logger="labeler.jobs"):
        job = Job(work, name="broken").run()
    assert job.finished and job.error == "KeyError: 'missing' (the server log has the details)"
    assert "background job broken failed" in caplog.text and "Traceback" in caplog.text


def test_work_sees_a_request_to_stop():
    seen = []
    job = Job(lambda job: seen.append(job.stop_requested))
    job.request_stop()
    job.run()
    assert seen == [True]
