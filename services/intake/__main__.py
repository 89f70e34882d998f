from shared.runtime import serve

from .app import build
from .settings import IntakeSettings

settings = IntakeSettings()
serve(build(settings), settings)
