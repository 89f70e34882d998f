"""The registration as callers send it, validated field by field (HTTP bodies and WhatsApp drafts).

Unknown fields are refused (a typo must not be silently dropped); ``cod_fee`` is refused with its
own reason: the fee is the office's configured shipping fee, never the caller's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from shared.contracts.events import Address, DocumentType, Partner

from .validation import (
    clean_text,
    normalize_kabupaten_kota,
    normalize_phone,
    normalize_province,
    normalize_rt_rw,
    validate_name,
    validate_nik,
    validate_place,
    validate_postal_code,
)


def _text_rule(rule: Callable[[str], str]) -> AfterValidator:
    return AfterValidator(rule)


def _clean(value: Any) -> Any:
    return clean_text(value) if isinstance(value, str) else value


# Strings only (pydantic refuses numbers for str), cleaned, then the field's own rule.
Text = Annotated[str, BeforeValidator(_clean)]
Nik = Annotated[str, Field(max_length=40), _text_rule(validate_nik)]
Phone = Annotated[str, Field(max_length=40), _text_rule(normalize_phone)]
Name = Annotated[Text, Field(max_length=100), _text_rule(validate_name)]


def _place(what: str, max_len: int = 100) -> Any:
    return Annotated[
        Text, Field(max_length=max_len), _text_rule(lambda v: validate_place(v, what, max_len))
    ]


Street = _place("jalan", 200)
Kelurahan = _place("kelurahan/desa")
Kecamatan = _place("kecamatan")
RtRw = Annotated[Text, Field(max_length=30), _text_rule(normalize_rt_rw)]
KabupatenKota = Annotated[Text, Field(max_length=100), _text_rule(normalize_kabupaten_kota)]
Provinsi = Annotated[Text, Field(max_length=60), _text_rule(normalize_province)]
PostalCode = Annotated[Text, Field(max_length=10), _text_rule(validate_postal_code)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AddressIn(_In):
    street: Street = Field(description="Jalan, nomor rumah, dusun")
    rt_rw: RtRw = Field(description="RT/RW, e.g. 003/005 (3/5 and RT 3 RW 5 are accepted)")
    kelurahan: Kelurahan = Field(description="Kelurahan or desa")
    kecamatan: Kecamatan
    kabupaten_kota: KabupatenKota = Field(description="Kabupaten X or Kota X")
    provinsi: Provinsi
    postal_code: PostalCode

    def to_contract(self) -> Address:
        return Address(**self.model_dump())


class ApplicantIn(_In):
    name: Name
    nik: Nik = Field(description="16 digit NIK (spaces, dashes and dots are ignored)")
    phone: Phone = Field(description="WhatsApp number, any common form: 0812…, 62812…, +62 812…")


class DeliveryIn(_In):
    partner: Partner
    recipient_name: Name | None = None
    recipient_phone: Phone | None = None
    address: AddressIn


class _Registration(_In):
    document_type: DocumentType
    applicant: ApplicantIn
    delivery: DeliveryIn
    # Not a field anyone may set: declared only to refuse it with the reason.
    cod_fee: Any = Field(default=None, exclude=True, json_schema_extra={"readOnly": True})

    @field_validator("cod_fee", mode="before")
    @classmethod
    def _fee_is_not_the_callers(cls, value: Any) -> None:
        raise ValueError(
            "ongkos kirim ditetapkan kantor, tidak boleh diisi"
            " / the shipping fee is set by the office and cannot be sent"
        )


class RegistrationIn(_Registration):
    """A request for a document to be delivered home, from the applicant (the web form)."""

    channel: Literal["web"] = "web"


class OperatorRegistrationIn(_Registration):
    """A request an operator registers for a walk-in or phone applicant (channel ``counter``)."""

    via: Literal["walk_in", "phone"] = Field(
        description="walk_in: the applicant is at the counter; phone: they called the office"
    )
    another_person: bool = Field(
        default=False,
        description="The document is about someone other than an open request's subject "
        "(a second child's KIA): allows a second open request of that type",
    )
