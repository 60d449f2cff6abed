"""Test-wide fixtures."""

import locale

import pytest
import torch

# the locale the test session started with (normally UTF-8)
_SESSION_LC_CTYPE = locale.setlocale(locale.LC_CTYPE)


@pytest.fixture(autouse=True)
def _restore_locale():
    """GDCM (under SimpleITK's DICOM writer, also in module-scoped fixtures) resets the C
    locale to "C", which turns Python's default text encoding into ASCII for every later
    test; put the session's locale back around each test."""
    locale.setlocale(locale.LC_CTYPE, _SESSION_LC_CTYPE)
    yield
    locale.setlocale(locale.LC_CTYPE, _SESSION_LC_CTYPE)


@pytest.fixture
def one_thread():
    """Run torch on one thread for the test: tiny tensors go faster, far faster when other jobs
    share the 2 cores, and multi-process tests get bit-identical CPU results."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
