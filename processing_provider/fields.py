"""Attribute fields for algorithm outputs, on QGIS 3.22 and on QGIS 4 (Qt6).

QgsField takes a QVariant.Type up to QGIS 3.36 and a QMetaType.Type from 3.38; PyQt6's QVariant has no Type
enum at all, so the choice is made here once.
"""

from qgis.core import Qgis, QgsField

KINDS = ("string", "int", "int64", "double", "datetime", "bool")


def _types():
    if Qgis.QGIS_VERSION_INT >= 33800:
        from qgis.PyQt.QtCore import QMetaType

        t = QMetaType.Type
        return dict(zip(KINDS, (t.QString, t.Int, t.LongLong, t.Double, t.QDateTime, t.Bool)))
    from qgis.PyQt.QtCore import QVariant

    return dict(zip(KINDS, (QVariant.String, QVariant.Int, QVariant.LongLong, QVariant.Double, QVariant.DateTime,
                            QVariant.Bool)))


def field(name, kind="string", length=0):
    """A QgsField of one of KINDS."""
    return QgsField(name, _types()[kind], len=length)
