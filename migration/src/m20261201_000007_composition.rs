//! Composed versions: what a version was authored as and the versions it
//! includes, a reverse index for "who includes this prompt", and the
//! breaking changes a label move overrode.
//!
//! `prompt_versions.includes` (the exact versions, JSON) and `.source` (the
//! template and variables as authored, JSON) are null for a version without
//! includes. `version_includes` holds one row per (including version,
//! included version), so dependents are one indexed query; it refers to the
//! included prompt by id without a foreign key, so a prompt deleted with
//! `force` leaves the versions built from it intact. `down` drops all of it
//! (composed versions keep their expanded text, which is all they need to
//! render).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum Prompts {
    Table,
    Id,
}

#[derive(DeriveIden, Clone, Copy)]
enum PromptVersions {
    Table,
    Includes,
    Source,
}

#[derive(DeriveIden, Clone, Copy)]
enum VersionIncludes {
    Table,
    PromptId,
    Version,
    IncludedPromptId,
    IncludedVersion,
    ViaLabel,
}

#[derive(DeriveIden, Clone, Copy)]
enum LabelHistory {
    Table,
    Overrides,
}

const DEPENDENTS_INDEX: &str = "ix_version_includes_included";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [PromptVersions::Includes, PromptVersions::Source] {
            manager
                .alter_table(
                    Table::alter()
                        .table(PromptVersions::Table)
                        .add_column(ColumnDef::new(column).json_binary().null())
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(LabelHistory::Table)
                    .add_column(ColumnDef::new(LabelHistory::Overrides).json_binary().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(VersionIncludes::Table)
                    .col(ColumnDef::new(VersionIncludes::PromptId).uuid().not_null())
                    .col(ColumnDef::new(VersionIncludes::Version).integer().not_null())
                    .col(
                        ColumnDef::new(VersionIncludes::IncludedPromptId)
                            .uuid()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(VersionIncludes::IncludedVersion)
                            .integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(VersionIncludes::ViaLabel).string_len(63).null())
                    .primary_key(
                        Index::create()
                            .col(VersionIncludes::PromptId)
                            .col(VersionIncludes::Version)
                            .col(VersionIncludes::IncludedPromptId)
                            .col(VersionIncludes::IncludedVersion),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_version_includes_prompt")
                            .from(VersionIncludes::Table, VersionIncludes::PromptId)
                            .to(Prompts::Table, Prompts::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(DEPENDENTS_INDEX)
                    .table(VersionIncludes::Table)
                    .col(VersionIncludes::IncludedPromptId)
                    .col(VersionIncludes::PromptId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(VersionIncludes::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(LabelHistory::Table)
                    .drop_column(LabelHistory::Overrides)
                    .to_owned(),
            )
            .await?;
        for column in [PromptVersions::Source, PromptVersions::Includes] {
            manager
                .alter_table(
                    Table::alter()
                        .table(PromptVersions::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
