"""Test-wide fixtures."""

import locale

import pytest


@pytest.fixture(autouse=True)
def _restore_locale():
    """GDCM (under SimpleITK's DICOM writer) resets the C locale to "C", which turns Python's
    default text encoding into ASCII for every later test; put it back after each test."""
    saved = locale.setlocale(locale.LC_CTYPE)
    yield
    locale.setlocale(locale.LC_CTYPE, saved)
