from shared.runtime import serve

from .app import build
from .settings import PrintingSettings

settings = PrintingSettings()
serve(build(settings), settings)
